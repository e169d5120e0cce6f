//go:build e2e && unix && !linux

package e2e

import (
	"os"
	"syscall"
)

// supervisorAttr puts the supervisor in a process group of its own. There
// is no death signal outside Linux; watchParent stands in for it.
func supervisorAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// watchParent sends SIGTERM to signals once the test binary has died.
func watchParent(signals chan<- os.Signal) { go pollParent(signals) }

// signalOwnGroup sends sig to the caller's process group.
func signalOwnGroup(sig syscall.Signal) {
	_ = syscall.Kill(-syscall.Getpgrp(), sig)
}

// killGroup kills the process group that p leads.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
