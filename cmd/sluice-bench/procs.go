package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/bench"
)

// proc is a sluice child process whose output goes to a log file in the
// bench's directory.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startProc starts bin with args, its stdout and stderr in dir/name.log. The
// process is killed if this one dies.
func startProc(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s %s): %w", name, bin, strings.Join(args, " "), err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, with its error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop interrupts the process as Ctrl-C would, and kills it if it has not
// exited within 20s.
func (p *proc) stop() {
	if ok, _ := p.exited(); ok {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitLog waits until a line of the process's log contains every one of
// words.
func (p *proc) waitLog(ctx context.Context, timeout time.Duration, words ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		if found, err := logHas(p.logPath, words); err != nil || found {
			return err
		}
		if ok, err := p.exited(); ok {
			return fmt.Errorf("%s exited (%v) before logging %q; its log:\n%s", p.name, err, strings.Join(words, " "), tail(p.logPath, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %s; its log:\n%s", p.name, strings.Join(words, " "), timeout, tail(p.logPath, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func logHas(path string, words []string) (bool, error) {
	n, err := countLines(path, words)
	return n > 0, err
}

// countLines counts the lines of the file at path that contain all of words.
func countLines(path string, words []string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			n++
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return n, err
	}
	return n, nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// cpuTime is the CPU time used so far by the distinct live processes of ps.
func cpuTime(ps ...*proc) (time.Duration, error) {
	var sum time.Duration
	seen := map[*proc]bool{}
	for _, p := range ps {
		if p == nil || seen[p] {
			continue
		}
		seen[p] = true
		d, err := bench.CPUTime(p.pid())
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.name, err)
		}
		sum += d
	}
	return sum, nil
}
