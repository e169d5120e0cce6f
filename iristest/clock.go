package iristest

import (
	"sync"
	"time"
)

// Clock is a fake clock that tests advance instead of sleeping. Give its Now
// to the emulator (SetClock) and to the code under test, so that both agree
// on when tokens expire.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock starts at the given time.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
