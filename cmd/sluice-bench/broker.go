package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// memoryBrokerArg, as the first argument, makes sluice-bench a Kafka broker
// process (kfake, in memory) listening on the address that follows. Part
// (d) reads its 10,000 partitions from one: the embedded broker of `sluice
// dev` persists every partition in a segment file and an index file that it
// keeps open, so 10,000 partitions take 20,000 file descriptors, more than
// an ordinary open-file limit allows.
const memoryBrokerArg = "internal-memory-broker"

// runMemoryBroker serves until SIGINT or SIGTERM.
func runMemoryBroker(addr string) error {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("broker address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("broker address %q: %w", addr, err)
	}
	k, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		return fmt.Errorf("in-memory broker on %s: %w", addr, err)
	}
	defer k.Close()
	fmt.Printf("in-memory broker is up on %s\n", k.ListenAddrs()[0])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// startMemoryBroker starts this program as an in-memory broker process
// named name, and returns it with its address.
func (cl *cluster) startMemoryBroker(ctx context.Context, name string) (*proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("in-memory broker: %w", err)
	}
	addrs, err := freeAddrs(1)
	if err != nil {
		return nil, "", err
	}
	p, err := startProc(cl.dir, name, self, memoryBrokerArg, addrs[0])
	if err != nil {
		return nil, "", err
	}
	if err := p.waitLog(ctx, 30*time.Second, "is up"); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addrs[0], nil
}

// openFileLimit is this process's soft limit on open files (children
// inherit it), or 0 when unknown.
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}
