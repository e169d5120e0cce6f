//go:build e2e

package e2e

import (
	"os"
	"syscall"
)

// supervisorAttr puts the supervisor in a process group of its own and has
// the kernel send it SIGTERM when the test binary dies.
func supervisorAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
}

// watchParent is a no-op on Linux: the death signal set by supervisorAttr
// reaches the supervisor directly.
func watchParent(chan<- os.Signal) {}

// signalOwnGroup sends sig to the caller's process group.
func signalOwnGroup(sig syscall.Signal) {
	_ = syscall.Kill(-syscall.Getpgrp(), sig)
}

// killGroup kills the process group that p leads.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
