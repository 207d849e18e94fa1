// Package failpoint crashes or freezes the process at named points, so that
// tests can kill real processes at exact moments (SLUICE_FAILPOINTS).
package failpoint

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Set is a set of armed points. A nil Set does nothing.
type Set map[string]*point

type point struct {
	spec string
	n    int64
	sig  syscall.Signal
	seen atomic.Int64
}

// Parse reads a comma-separated list of name[:n[:action]]: the action
// happens the n-th time (default 1) the point is reached. Actions: kill
// (SIGKILL, as kill -9; the default) and stop (SIGSTOP: the process freezes
// until SIGCONT, like a long pause or a network partition). Names not in
// known are refused.
func Parse(spec string, known ...string) (Set, error) {
	s := Set{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		p := &point{spec: item, n: 1, sig: syscall.SIGKILL}
		if len(parts) > 1 {
			v, err := strconv.ParseInt(parts[1], 10, 64)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("failpoint %q: count must be a positive number", item)
			}
			p.n = v
		}
		if len(parts) > 2 {
			switch parts[2] {
			case "kill":
			case "stop":
				p.sig = syscall.SIGSTOP
			default:
				return nil, fmt.Errorf("failpoint %q: action must be kill or stop", item)
			}
		}
		ok := false
		for _, k := range known {
			ok = ok || k == parts[0]
		}
		if !ok {
			return nil, fmt.Errorf("failpoint %q: unknown point %q (known: %s)", item, parts[0], strings.Join(known, ", "))
		}
		s[parts[0]] = p
	}
	return s, nil
}

// Hit reports that the named point was reached, acting if it is armed for
// this hit.
func (s Set) Hit(name string) {
	p, ok := s[name]
	if !ok {
		return
	}
	if p.seen.Add(1) == p.n {
		fmt.Fprintf(os.Stderr, "failpoint %s reached: sending %s to myself\n", p.spec, p.sig)
		if p.sig != syscall.SIGSTOP {
			_ = syscall.Kill(os.Getpid(), p.sig)
			return
		}
		// A process stops asynchronously: the calling thread may run on for
		// a moment after kill(2) returns. Waiting for SIGCONT makes sure
		// this goroutine does nothing more until the process was really
		// stopped and then continued.
		cont := make(chan os.Signal, 1)
		signal.Notify(cont, syscall.SIGCONT)
		defer signal.Stop(cont)
		_ = syscall.Kill(os.Getpid(), p.sig)
		<-cont
		fmt.Fprintf(os.Stderr, "failpoint %s: resumed\n", p.spec)
	}
}

// Armed reports whether name is armed.
func (s Set) Armed(name string) bool {
	_, ok := s[name]
	return ok
}
