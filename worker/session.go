package worker

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// session is one stream to one coordinator; its goroutines end with it.
func (w *Worker) session(ctx context.Context, addr string) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	}, w.cfg.DialOptions...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := sluicev1.NewWorkerServiceClient(conn).Connect(ctx)
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	host, _ := os.Hostname()
	if err := stream.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Register{Register: &sluicev1.Register{
		WorkerId: w.cfg.ID, Slots: int32(w.cfg.Slots), Host: host, Labels: w.cfg.Labels,
	}}}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	hb := first.GetRegistered().GetHeartbeatInterval().AsDuration()
	if hb <= 0 {
		hb = time.Second
	}
	w.logger.Info("connected", "coordinator", addr, "slots", w.cfg.Slots)

	g, gctx := errgroup.WithContext(ctx)
	// Recv has no ctx of its own: cancelling the stream's is what unblocks it.
	g.Go(func() error {
		<-gctx.Done()
		cancel()
		return nil
	})
	out := make(chan *sluicev1.ConnectRequest, w.cfg.Slots*2)
	var running sync.WaitGroup
	var runningCount int32
	var countMu sync.Mutex
	slots := make(chan struct{}, w.cfg.Slots)

	// Sender: the only goroutine that writes to the stream.
	g.Go(func() error {
		t := time.NewTicker(hb)
		defer t.Stop()
		for {
			var msg *sluicev1.ConnectRequest
			select {
			case <-gctx.Done():
				return nil
			case msg = <-out:
			case <-t.C:
				countMu.Lock()
				n := runningCount
				countMu.Unlock()
				msg = &sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Heartbeat{Heartbeat: &sluicev1.Heartbeat{RunningTasks: n}}}
			}
			if err := stream.Send(msg); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
	})
	// Watchdog: the coordinator pings every heartbeat interval; silence for
	// three of them means it froze or is cut off, so try the next one.
	heard := make(chan struct{}, 1)
	g.Go(func() error {
		silence := 3 * hb
		t := time.NewTimer(silence)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-heard:
				t.Reset(silence) // safe without draining since Go 1.23
			case <-t.C:
				return fmt.Errorf("coordinator %s silent for %s", addr, silence)
			}
		}
	})
	// Receiver: starts a goroutine per task, bounded by the slots.
	g.Go(func() error {
		defer running.Wait()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			select {
			case heard <- struct{}{}:
			default:
			}
			task := msg.GetTask()
			if task == nil {
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-gctx.Done():
				return nil
			}
			running.Add(1)
			countMu.Lock()
			runningCount++
			countMu.Unlock()
			go func() {
				defer running.Done()
				defer func() {
					countMu.Lock()
					runningCount--
					countMu.Unlock()
					<-slots
				}()
				res := w.runTask(gctx, task)
				select {
				case out <- &sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Result{Result: res}}:
				case <-gctx.Done():
				}
			}()
		}
	})
	return g.Wait()
}
