package iristest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestIssuedRecordsEveryAnswer(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	clock := newFakeClock()
	s.SetClock(clock.Now)
	at1, rt1 := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	clock.Advance(time.Minute)
	at2, rt2 := wantToken(t, refresh(t, s, mainUser, rt1), "api offline_access", true)
	atOther, _ := wantToken(t, login(t, s, otherUser, "api"), "api", false)

	want := []Issuance{
		{Endpoint: "/token", GrantType: "password", ClientID: mainUser.ClientID, Username: mainUser.Username, Scope: "api offline_access",
			AccessToken: at1, RefreshToken: rt1, IssuedAt: clock.Now().Add(-time.Minute), ExpiresAt: clock.Now().Add(time.Hour - time.Minute), Answered: true},
		{Endpoint: "/token", GrantType: "refresh_token", ClientID: mainUser.ClientID, Username: mainUser.Username, Scope: "api offline_access",
			AccessToken: at2, RefreshToken: rt2, IssuedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour), Answered: true},
		{Endpoint: "/token", GrantType: "password", ClientID: otherUser.ClientID, Username: otherUser.Username, Scope: "api",
			AccessToken: atOther, IssuedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour), Answered: true},
	}
	got := s.Issued()
	if len(got) != len(want) {
		t.Fatalf("Issued() has %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Issued()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}

	// Revocation and ResetStats change nothing about who got what.
	s.RevokeAll(mainUser.Username)
	s.ResetStats()
	if is, ok := s.IssuanceOf(rt1); !ok || is.AccessToken != at1 {
		t.Errorf("IssuanceOf(first refresh token) = %+v, %t", is, ok)
	}
	if is, ok := s.IssuanceOf(at2); !ok || is.RefreshToken != rt2 {
		t.Errorf("IssuanceOf(second access token) = %+v, %t", is, ok)
	}
	for token, client := range map[string]string{at1: mainUser.ClientID, rt2: mainUser.ClientID, atOther: otherUser.ClientID} {
		if id, ok := s.OwnerOf(token); !ok || id != client {
			t.Errorf("OwnerOf(%s) = %q, %t, want %q", token, id, ok, client)
		}
	}
	if id, ok := s.OwnerOf("at_never"); ok || id != "" {
		t.Errorf("OwnerOf(unknown) = %q, %t", id, ok)
	}
	if !s.IsAccessToken(at1) || s.IsAccessToken(rt1) || s.IsAccessToken("at_never") {
		t.Error("IsAccessToken wrong")
	}
	if !s.IsRefreshToken(rt1) || s.IsRefreshToken(at1) || s.IsRefreshToken("rt_never") {
		t.Error("IsRefreshToken wrong")
	}

	// The copy handed out is the caller's.
	got[0].AccessToken = "changed"
	if s.Issued()[0].AccessToken != at1 {
		t.Error("Issued() shares its slice")
	}
}

func TestIssuedMarksAnswersLostToFaults(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.FailNext(1, Fault{Status: 502, AfterHandling: true})
	if res := post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")); res.status != 502 {
		t.Fatalf("status %d", res.status)
	}
	s.FailNext(1, Fault{Delay: time.Millisecond, AfterHandling: true})
	at, _ := wantToken(t, login(t, s, mainUser, "api"), "api", false)
	// Refused and faulted-before-handling requests issue nothing.
	post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "password", "username", mainUser.Username, "password", "wrong"))
	s.FailNext(1, Fault{Status: 503})
	post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api"))

	got := s.Issued()
	if len(got) != 2 || got[0].Answered || !got[1].Answered || got[1].AccessToken != at {
		t.Errorf("Issued() = %+v", got)
	}
}

func TestDropConnection(t *testing.T) {
	t.Parallel()
	s, handled := watchedServer(t)
	_, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	waitFor(t, handled, "login")

	// Acted on, then dropped: the refresh token is spent, the client gets no
	// status at all, and the new tokens are on record as never answered.
	s.FailNext(1, Fault{AfterHandling: true, DropConnection: true})
	wantDropped(t, s.TokenURL, basicOf(mainUser), form("grant_type", "refresh_token", "refresh_token", rt))
	if r := waitFor(t, handled, "dropped refresh"); r.Status != 0 || r.GrantType != "refresh_token" {
		t.Errorf("logged %+v", r)
	}
	if st := s.Stats(); st.RefreshGrants != 1 {
		t.Errorf("RefreshGrants %d: the grant was not applied", st.RefreshGrants)
	}
	if got := s.Issued(); len(got) != 2 || got[1].GrantType != "refresh_token" || got[1].Answered {
		t.Errorf("Issued() = %+v", got)
	}
	wantOAuthError(t, refresh(t, s, mainUser, rt), 400, "invalid_grant")
	waitFor(t, handled, "reuse")

	// Dropped before handling: nothing happened.
	s.FailNext(1, Fault{DropConnection: true})
	wantDropped(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api"))
	waitFor(t, handled, "dropped login")
	if st := s.Stats(); st.PasswordGrants != 1 || len(s.Issued()) != 2 {
		t.Errorf("a dropped-before-handling request was acted on: %+v", st)
	}
}

func TestDropConnectionWithStatusPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("DropConnection with a Status accepted")
		}
	}()
	NewUnstartedServer().SetFault(&Fault{Status: 500, DropConnection: true})
}

// wantDropped sends a form request that must end in a transport error.
func wantDropped(t *testing.T, rawURL, auth, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want a transport error", resp.StatusCode)
	}
}
