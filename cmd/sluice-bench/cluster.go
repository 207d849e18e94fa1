package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/dev"
)

// cluster is Sluice run as a user would on one machine, each part its own
// process: `sluice dev --infra-only` (embedded etcd and the kfake broker),
// `sluice coordinator`, and `sluice worker` processes.
type cluster struct {
	dir, bin string
	kafka    string
	etcd     string
	grpc     string
	infra    *proc
	coord    *proc
	c        *client.Client
	workers  []*proc
	// workerArgs are added to every worker's command line.
	workerArgs []string
}

func freeAddrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		a, err := dev.FreeAddr()
		if err != nil {
			return nil, fmt.Errorf("free address: %w", err)
		}
		out[i] = a
	}
	return out, nil
}

// startCluster starts the infrastructure and the coordinator; workers come
// and go with startWorkers.
func startCluster(ctx context.Context, dir, bin string, coordArgs []string) (*cluster, error) {
	addrs, err := freeAddrs(5)
	if err != nil {
		return nil, err
	}
	cl := &cluster{dir: dir, bin: bin, kafka: addrs[0], etcd: addrs[1], grpc: addrs[3]}
	cl.infra, err = startProc(dir, "infra", bin, "dev", "--infra-only", "--data-dir", filepath.Join(dir, "infra"),
		"--kafka-addr", cl.kafka, "--etcd-addr", cl.etcd, "--etcd-peer-addr", addrs[2], "--grpc-addr", addrs[4], "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := cl.infra.waitLog(ctx, time.Minute, "is up"); err != nil {
		cl.close()
		return nil, err
	}
	cl.coord, err = startProc(dir, "coordinator", bin, append([]string{"coordinator", "--etcd-endpoints", cl.etcd, "--grpc-addr", cl.grpc, "--log-level", "info"}, coordArgs...)...)
	if err != nil {
		cl.close()
		return nil, err
	}
	if cl.c, err = client.Dial([]string{cl.grpc}); err != nil {
		cl.close()
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cl.c.Jobs(cctx)
		cancel()
		if err == nil {
			return cl, nil
		}
		if ok, perr := cl.coord.exited(); ok || time.Now().After(deadline) {
			cl.close()
			return nil, fmt.Errorf("coordinator not serving (exited %v: %v): %w; its log:\n%s", ok, perr, err, tail(cl.coord.logPath, 20))
		}
		select {
		case <-ctx.Done():
			cl.close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startWorkers stops the current workers and starts n new ones with slots
// each, named bench-<tag>-w<i>, and waits until the coordinator has
// registered them.
func (cl *cluster) startWorkers(ctx context.Context, tag string, n, slots int) error {
	cl.stopWorkers()
	for i := range n {
		id := fmt.Sprintf("bench-%s-w%d", tag, i+1)
		args := append([]string{"worker", "--coordinator", cl.grpc, "--id", id, "--slots", strconv.Itoa(slots), "--log-level", "info"}, cl.workerArgs...)
		w, err := startProc(cl.dir, id, cl.bin, args...)
		if err != nil {
			return err
		}
		cl.workers = append(cl.workers, w)
		if err := cl.coord.waitLog(ctx, 30*time.Second, "worker registered", "worker_id="+id); err != nil {
			return fmt.Errorf("%w\nworker log:\n%s", err, tail(w.logPath, 20))
		}
	}
	return nil
}

func (cl *cluster) stopWorkers() {
	for _, w := range cl.workers {
		w.stop()
	}
	cl.workers = nil
}

// workerGone returns an error naming a worker process that exited.
func (cl *cluster) workerGone() error {
	for _, w := range cl.workers {
		if ok, err := w.exited(); ok {
			return fmt.Errorf("worker %s exited (%v); its log:\n%s", w.name, err, tail(w.logPath, 20))
		}
	}
	return nil
}

// workersLeft counts the coordinator's "worker left" lines so far.
func (cl *cluster) workersLeft() int {
	n, _ := countLines(cl.coord.logPath, []string{"worker left"})
	return n
}

func (cl *cluster) close() {
	cl.stopWorkers()
	if cl.c != nil {
		cl.c.Close()
	}
	if cl.coord != nil {
		cl.coord.stop()
	}
	if cl.infra != nil {
		cl.infra.stop()
	}
}
