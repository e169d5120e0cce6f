package iristest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentUse drives every endpoint and the admin API from many
// goroutines at once; its value is mostly in running under -race.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	// Enough connections for real parallelism without exhausting ports.
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()

	send := func(url, auth, body string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", auth)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var sb strings.Builder
		_, _ = fmt.Fprint(&sb, resp.Header.Get("Content-Type"))
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, sb.String()
	}

	const workers = 1000
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			switch i % 4 {
			case 0, 1: // a password grant followed by a refresh
				status, body := send(s.TokenURL, basicOf(mainUser), passwordForm(mainUser, "api offline_access"))
				if status != 200 {
					failed.Add(1)
					t.Errorf("password grant: %d %s", status, body)
					return
				}
				rt := body[strings.Index(body, `"refresh_token":"`)+len(`"refresh_token":"`):]
				rt = rt[:strings.IndexByte(rt, '"')]
				if status, body := send(s.TokenURL, basicOf(mainUser), form("grant_type", "refresh_token", "refresh_token", rt)); status != 200 {
					failed.Add(1)
					t.Errorf("refresh: %d %s", status, body)
					return
				}
				ok.Add(1)
			case 2: // rejected requests
				if status, _ := send(s.TokenURL, basicOf(otherUser), passwordForm(otherUser, "bogus")); status != 400 {
					t.Errorf("bad scope: %d", status)
				}
			case 3: // the other endpoints, plus admin calls
				if status, _ := send(s.RevocationURL, basicOf(otherUser), form("token", "x")); status != 200 {
					t.Errorf("revoke: %d", status)
				}
				if status, _ := send(s.IntrospectionURL, basicOf(otherUser), form("token", "x")); status != 200 {
					t.Errorf("introspect: %d", status)
				}
				s.Stats()
				s.Requests()
				s.LiveRefreshTokens(mainUser.Username)
				s.SetTokenLifetime(time.Hour)
				s.AddUser(legacyUser)
				s.Introspect("x")
			}
		})
	}
	wg.Wait()

	st := s.Stats()
	if st.MaxInFlight < 2 {
		t.Errorf("MaxInFlight %d: the requests did not overlap", st.MaxInFlight)
	}
	st.MaxInFlight = 0 // how many overlapped depends on the scheduler
	want := Stats{
		PasswordGrants: workers / 2,
		RefreshGrants:  workers / 2,
		Rejected:       workers / 4,
		Revocations:    workers / 4,
		Requests:       workers/2*2 + workers/4,
	}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if n := s.LiveRefreshTokens(mainUser.Username); n != workers/2 {
		t.Errorf("LiveRefreshTokens %d", n)
	}
	if len(s.Requests()) != want.Requests {
		t.Errorf("%d requests logged", len(s.Requests()))
	}
}

// TestConcurrentRefreshRace sends one refresh token many times at once:
// exactly one use may win, every other one is a reuse.
func TestConcurrentRefreshRace(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	_, rt := wantToken(t, login(t, s, mainUser, "api offline_access"), "api offline_access", true)
	const n = 50
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(form("grant_type", "refresh_token", "refresh_token", rt)))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", basicOf(mainUser))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if wins.Load() != 1 || st.RefreshGrants != 1 || st.RefreshReuse != n-1 {
		t.Errorf("wins %d, stats %+v", wins.Load(), st)
	}
}

func TestMaxInFlightCountsConcurrentRequests(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.SetFault(&Fault{Delay: time.Hour})
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader("grant_type=password"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().InFlight < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight: %d", s.Stats().InFlight)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	for s.Stats().InFlight > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still in flight: %d", s.Stats().InFlight)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Stats().MaxInFlight; got != 3 {
		t.Fatalf("MaxInFlight = %d, want 3", got)
	}
}
