//go:build e2e && !unix

package e2e

import (
	"os"
	"syscall"
)

// Without process groups, the supervisor can only stop its own child; what
// that child started is left to it.

func supervisorAttr() *syscall.SysProcAttr { return nil }

// watchParent sends SIGTERM to signals once the test binary has died.
func watchParent(signals chan<- os.Signal) { go pollParent(signals) }

func signalOwnGroup(syscall.Signal) {}

func killGroup(p *os.Process) { _ = p.Kill() }
