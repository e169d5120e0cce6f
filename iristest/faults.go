package iristest

import (
	"fmt"
	"net/http"
	"time"
)

// Faults: abnormal answers of the token endpoints, queued or sticky.

// Fault describes an abnormal answer from the token endpoint. Faults are taken
// before any protocol check, so they apply to well-formed and malformed
// requests alike.
type Fault struct {
	// Status is the HTTP status to answer. Zero means "answer normally",
	// which together with Delay or AfterHandling gives a slow but otherwise
	// correct response.
	Status      int
	Body        string
	ContentType string
	RetryAfter  string
	// Delay holds the answer back for this long, or until the client gives
	// up or the server is closed, whichever comes first. A very large Delay
	// models a server that hangs.
	Delay time.Duration
	// AfterHandling runs the request through the normal protocol first, so
	// tokens are issued and refresh tokens are consumed, and only then
	// applies Delay and Status: a response lost after the server acted.
	AfterHandling bool
	// DropConnection closes the connection, after Delay, without sending
	// any HTTP response, so the client sees a transport error rather than
	// a status. With AfterHandling it models a server that acted (issued
	// tokens, consumed the refresh token) and then lost the connection.
	// Status must be zero.
	DropConnection bool
}

// check panics in the test that configured an impossible fault, rather than
// in a handler where net/http would turn it into a dropped connection.
func (f Fault) check() {
	if f.Status != 0 && (f.Status < 200 || f.Status > 999) {
		panic(fmt.Sprintf("iristest: Fault.Status %d is not a final HTTP status", f.Status))
	}
	if f.DropConnection && f.Status != 0 {
		panic("iristest: Fault.DropConnection sends no status, so Fault.Status must be 0")
	}
}

// FailNext queues f for the next n token endpoint requests (/token,
// /token/v2 and /apptoken share one queue). Queued faults are used in the
// order they were queued, one per request, before any sticky fault.
func (s *Server) FailNext(n int, f Fault) {
	f.check()
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// SetFault applies f to every token endpoint request that finds no queued
// fault, until SetFault(nil).
func (s *Server) SetFault(f *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == nil {
		s.sticky = nil
		return
	}
	c := *f
	c.check()
	s.sticky = &c
}

// SetResponseOverride installs fn, which sees every token endpoint request
// (with its body intact; r.URL.Path tells the endpoints apart) before faults
// and protocol checks. When fn returns true it has
// answered and the emulator does nothing more. nil removes the override.
func (s *Server) SetResponseOverride(fn func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.override = fn
}

// SetLatency makes every token endpoint request wait d before anything
// else happens to it (the override, faults, the protocol), as a slow IRIS
// would; 0, the default, answers at once. Requests are counted in InFlight
// while they wait, and a client that gives up meanwhile gets no answer. The
// wait is real time, not the emulator's clock: it is what lets grants
// overlap.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = max(d, 0)
}
