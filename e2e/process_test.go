//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// process is a child started under a supervisor in a process group of its
// own, so that stopping it also stops the plugin processes Vault starts.
type process struct {
	name    string
	cmd     *exec.Cmd // the supervisor
	logPath string
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// superviseEnv makes the test binary act as a supervisor (see supervise)
// instead of running tests.
const superviseEnv = "IRIS_E2E_SUPERVISE"

func startProcess(t testing.TB, name, logPath string, env []string, bin string, args ...string) *process {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, append([]string{bin}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(env, superviseEnv+"=1")
	// A group of its own, and (on Linux) a death signal: cleanups do not
	// run when go test panics on its timeout; the supervisor then gets the
	// signal and takes the group down.
	cmd.SysProcAttr = supervisorAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// supervise runs args[0] and returns its exit code. Vault starts its plugins
// in its own process group and never stops them if it is killed; a dead test
// binary would leave them running. The supervisor leads the group: on
// SIGTERM (from stop, or as the test binary's death signal) it lets Vault
// shut down gracefully for a while and then kills the whole group.
func supervise(args []string) int {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	watchParent(signals)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, superviseEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdout, os.Stderr, env
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 127
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-signals:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
		}
	}
	// Whatever the child left behind in the group goes too; the supervisor
	// has SIGTERM handled, so only the others die of it.
	signalOwnGroup(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		signalOwnGroup(syscall.SIGKILL)
	}
	return cmd.ProcessState.ExitCode()
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the supervisor to shut the process down and kills the whole
// group if that takes too long. It is safe to call more than once.
func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
		}
		killGroup(p.cmd.Process)
		<-p.done
	})
}

// kill takes the process down at once with SIGKILL, as a crash would: on
// Unix the supervisor's whole group, so Vault and the plugins it started go
// together, without any chance to clean up.
func (p *process) kill() {
	killGroup(p.cmd.Process)
	<-p.done
}

// logTail is the end of a process's log, for failure messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pollParent stands in for a death signal where there is none: it sends
// SIGTERM to signals once the process that started this one has gone, which
// makes the orphan's parent another process.
//
//lint:ignore U1000 used by the watchParent of platforms without a parent-death signal (process_unix_test.go, process_other_test.go)
func pollParent(signals chan<- os.Signal) {
	parent := os.Getppid()
	for os.Getppid() == parent {
		time.Sleep(500 * time.Millisecond)
	}
	signals <- syscall.SIGTERM
}
