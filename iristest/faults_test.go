package iristest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// watchedServer returns a started server whose handled /token requests are
// delivered on the returned channel, so tests can wait for the server side
// of a request without sleeping.
func watchedServer(t *testing.T) (*Server, <-chan Request) {
	t.Helper()
	done := make(chan Request, 100)
	s := NewUnstartedServer(mainUser, otherUser)
	s.tokenDone = func(r *Request) { done <- *r }
	s.Start()
	t.Cleanup(s.Close)
	return s, done
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second): // a failure guard, not a pacing sleep
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestFailNextOrdering(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.FailNext(1, Fault{Status: 503, RetryAfter: "7", ContentType: "text/html", Body: "<html>down</html>"})
	s.FailNext(2, Fault{Status: 429, Body: "slow down"})
	s.FailNext(0, Fault{Status: 418})
	s.FailNext(-1, Fault{Status: 418})
	// The faults apply to requests that would otherwise fail as well.
	res := post(t, s.TokenURL, "", "garbage")
	if res.status != 503 || res.header.Get("Retry-After") != "7" || res.header.Get("Content-Type") != "text/html" || string(res.raw) != "<html>down</html>" {
		t.Fatalf("first: %d %v %q", res.status, res.header, res.raw)
	}
	for i := range 2 {
		res = post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api"))
		if res.status != 429 || res.header.Get("Retry-After") != "" || string(res.raw) != "slow down" {
			t.Fatalf("429 #%d: %d %v %q", i, res.status, res.header, res.raw)
		}
	}
	wantToken(t, post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")), "api", false)

	st := s.Stats()
	if st.Requests != 4 || st.PasswordGrants != 1 || st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
	var statuses []int
	for _, r := range s.Requests() {
		statuses = append(statuses, r.Status)
	}
	if want := []int{503, 429, 429, 200}; !equalInts(statuses, want) {
		t.Errorf("logged statuses %v, want %v", statuses, want)
	}
	// Faults do not touch the other endpoints.
	s.FailNext(1, Fault{Status: 500})
	if res := post(t, s.RevocationURL, basicOf(mainUser), form("token", "x")); res.status != 200 {
		t.Errorf("revoke under a queued fault: %d", res.status)
	}
	if res := post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")); res.status != 500 {
		t.Errorf("queued fault lost: %d", res.status)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStickyFault(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	f := &Fault{Status: 500, Body: "oops"}
	s.SetFault(f)
	f.Status = 200 // the server keeps its own copy
	s.FailNext(1, Fault{Status: 502})
	want := []int{502, 500, 500}
	for i, w := range want {
		if res := post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")); res.status != w {
			t.Fatalf("request %d: %d, want %d", i, res.status, w)
		}
	}
	s.SetFault(nil)
	wantToken(t, login(t, s, mainUser, "api"), "api", false)
}

func TestFaultStatusChecked(t *testing.T) {
	t.Parallel()
	s := NewUnstartedServer()
	for _, status := range []int{-1, 42, 100, 103, 1000} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Status %d accepted", status)
				}
			}()
			s.FailNext(1, Fault{Status: status})
		}()
	}
}

func TestAfterHandlingConsumesRefreshToken(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	_, rt1 := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)

	s.FailNext(1, Fault{Status: 502, Body: "bad gateway", AfterHandling: true})
	if res := refresh(t, s, mainUser, rt1); res.status != 502 || string(res.raw) != "bad gateway" {
		t.Fatalf("got %d %q", res.status, res.raw)
	}
	st := s.Stats()
	if st.RefreshGrants != 1 {
		t.Errorf("RefreshGrants %d: the grant was not applied", st.RefreshGrants)
	}
	// The new refresh token exists, but the client never saw it.
	if n := s.LiveRefreshTokens(mainUser.Username); n != 1 {
		t.Errorf("LiveRefreshTokens %d", n)
	}
	// The retry with the old token is a reuse.
	wantOAuthError(t, refresh(t, s, mainUser, rt1), 400, "invalid_grant")
	if st := s.Stats(); st.RefreshReuse != 1 {
		t.Errorf("RefreshReuse %d", st.RefreshReuse)
	}
	reqs := s.Requests()
	if len(reqs) != 3 || reqs[1].RefreshToken != rt1 || reqs[2].RefreshToken != rt1 || reqs[1].Status != 502 {
		t.Errorf("requests %+v", reqs)
	}

	// A rejected request stays rejected underneath the fault.
	s.FailNext(1, Fault{Status: 500, AfterHandling: true})
	post(t, s.TokenURL, basicOf(mainUser), form("grant_type", "password", "username", mainUser.Username, "password", "x"))
	if st := s.Stats(); st.Rejected != 2 {
		t.Errorf("Rejected %d", st.Rejected)
	}
}

func TestDelayedNormalAnswers(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	// Short delays: these prove the answer arrives intact, not the timing.
	s.FailNext(1, Fault{Delay: time.Millisecond})
	wantToken(t, login(t, s, mainUser, "api"), "api", false)
	s.FailNext(1, Fault{Delay: time.Millisecond, AfterHandling: true})
	wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	s.FailNext(1, Fault{Delay: time.Millisecond, Status: 504})
	if res := post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")); res.status != 504 {
		t.Errorf("status %d", res.status)
	}
	if st := s.Stats(); st.PasswordGrants != 2 || st.Requests != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestDelayRespectsContextCancellation(t *testing.T) {
	t.Parallel()
	for _, after := range []bool{false, true} {
		name := "before handling"
		if after {
			name = "after handling"
		}
		t.Run(name, func(t *testing.T) {
			s, handled := watchedServer(t)
			arrived := make(chan struct{}, 1)
			s.SetResponseOverride(func(http.ResponseWriter, *http.Request) bool {
				arrived <- struct{}{}
				return false
			})
			s.FailNext(1, Fault{Delay: time.Hour, Status: 500, AfterHandling: after})

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader(passwordForm(mainUser, "api")))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", basicOf(mainUser))
			errc := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			waitFor(t, arrived, "request to arrive")
			cancel()
			if err := waitFor(t, errc, "client to return"); !errors.Is(err, context.Canceled) {
				t.Errorf("client error %v", err)
			}
			// The handler must let go of the request without Close.
			r := waitFor(t, handled, "handler to give up")
			if r.Status != 0 {
				t.Errorf("logged status %d for an abandoned request", r.Status)
			}
			if st := s.Stats(); (st.PasswordGrants == 1) != after {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestCloseReleasesHeldRequests(t *testing.T) {
	t.Parallel()
	s, handled := watchedServer(t)
	arrived := make(chan struct{}, 2)
	s.SetResponseOverride(func(http.ResponseWriter, *http.Request) bool {
		arrived <- struct{}{}
		return false
	})
	s.FailNext(1, Fault{Delay: time.Hour})
	s.FailNext(1, Fault{Delay: time.Hour, AfterHandling: true})

	errc := make(chan error, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(passwordForm(mainUser, "api")))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", basicOf(mainUser))
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
	}
	waitFor(t, arrived, "first request")
	waitFor(t, arrived, "second request")

	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	waitFor(t, closed, "Close to return")
	for range 2 {
		// The connection is dropped, so the client sees an error rather
		// than an empty 200 it might take for an answer.
		if err := waitFor(t, errc, "client"); err == nil {
			t.Error("held request got an answer after Close")
		}
		if r := waitFor(t, handled, "handler"); r.Status != 0 {
			t.Errorf("logged status %d", r.Status)
		}
	}
	s.Close() // idempotent
}

func TestResponseOverride(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	var sawBody string
	s.SetResponseOverride(func(w http.ResponseWriter, r *http.Request) bool {
		b, _ := io.ReadAll(r.Body)
		sawBody = string(b)
		if strings.Contains(sawBody, "refresh_token") {
			return false
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		io.WriteString(w, `{"token_type":"Bearer","access_token":`)
		return true
	})
	s.FailNext(1, Fault{Status: 500})
	res := post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api"))
	if res.status != 200 || string(res.raw) != `{"token_type":"Bearer","access_token":` {
		t.Fatalf("got %d %q", res.status, res.raw)
	}
	if sawBody != passwordForm(mainUser, "api") {
		t.Errorf("override saw body %q", sawBody)
	}
	// Declined requests go on to faults and the protocol; the queued fault
	// was not consumed by the request the override answered.
	if res := refresh(t, s, mainUser, "rt_x"); res.status != 500 {
		t.Errorf("status %d", res.status)
	}
	s.SetResponseOverride(nil)
	wantToken(t, login(t, s, mainUser, "api"), "api", false)
	st := s.Stats()
	if st.Requests != 3 || st.PasswordGrants != 1 {
		t.Errorf("stats %+v", st)
	}
	if reqs := s.Requests(); reqs[0].Status != 200 || reqs[1].Status != 500 {
		t.Errorf("requests %+v", reqs)
	}
}

// Latency holds every token request back, counted in flight, so that
// concurrent requests overlap; the answers are the normal ones.
func TestLatencyOverlapsRequests(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.SetLatency(200 * time.Millisecond)
	start := time.Now()
	done := make(chan result, 4)
	for range 4 {
		go func() { done <- post(t, s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api")) }()
	}
	for range 4 {
		wantToken(t, <-done, "api", false)
	}
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("answered after %s, before the latency", elapsed)
	}
	if st := s.Stats(); st.MaxInFlight != 4 || st.InFlight != 0 {
		t.Errorf("stats %+v: the requests did not overlap", st)
	}

	// A client that gives up while it waits gets no answer and spends
	// nothing.
	s.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader(passwordForm(mainUser, "api")))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", basicOf(mainUser))
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the client's deadline, got %v", err)
	}
	if st := s.Stats(); st.PasswordGrants != 4 {
		t.Errorf("stats %+v: the abandoned request was handled", st)
	}
}
