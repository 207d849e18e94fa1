package worker

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/sluice-stream/sluice/auth"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// session is one stream to one coordinator; its goroutines end with it.
func (w *Worker) session(ctx context.Context, addr string) error {
	creds := insecure.NewCredentials()
	if w.cfg.TLS != nil {
		creds = credentials.NewTLS(w.cfg.TLS)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if w.cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.BearerFor(w.cfg.Token, addr)))
	}
	opts = append(append(opts,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
	), w.cfg.DialOptions...)
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
	if err := stream.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Register{Register: &sluicev1.Register{
		WorkerId: w.cfg.ID, Slots: int32(w.cfg.Slots), Host: w.cfg.Host, Labels: w.cfg.Labels,
		Processors: w.Processors(),
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
	w.logger.Info("connected", "coordinator", addr, "slots", w.cfg.Slots, "host", w.cfg.Host, "labels", w.cfg.Labels, "processors", w.Processors())
	w.connected.Store(true)
	w.metrics.connected.Set(1)
	defer func() {
		w.connected.Store(false)
		w.metrics.connected.Set(0)
	}()

	g, gctx := errgroup.WithContext(ctx)
	// Recv has no ctx of its own: cancelling the stream's is what unblocks it.
	g.Go(func() error {
		<-gctx.Done()
		cancel()
		return nil
	})
	out := make(chan *sluicev1.ConnectRequest, w.cfg.Slots*2)
	tasks := newTaskSet(w.cfg.Slots)
	defer tasks.wait()

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
				msg = &sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Heartbeat{Heartbeat: &sluicev1.Heartbeat{RunningTasks: int32(tasks.len())}}}
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
	// Receiver: never blocks on tasks, so that it hears every ping and
	// cancel whatever the tasks do. Each task runs in its own goroutine,
	// which waits for a slot (the coordinator sends no more than the slots,
	// but a cancelled task may still be finishing).
	g.Go(func() error {
		for {
			msg, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			select {
			case heard <- struct{}{}:
			default:
			}
			if c := msg.GetCancel(); c != nil {
				for _, id := range c.GetDispatchIds() {
					tasks.cancel(id)
				}
				continue
			}
			task := msg.GetTask()
			if task == nil {
				continue
			}
			tctx, ok := tasks.start(gctx, task.GetKey().GetDispatchId())
			if !ok {
				continue // a duplicate dispatch id: already running
			}
			go func() {
				defer tasks.done(task.GetKey().GetDispatchId())
				if !tasks.acquire(tctx) {
					return
				}
				defer tasks.releaseSlot()
				w.metrics.slotsBusy.Inc()
				defer w.metrics.slotsBusy.Dec()
				res := w.runTask(tctx, task)
				if h := w.cfg.BeforeResult; h != nil {
					h(task)
				}
				cancelled := tctx.Err() != nil && gctx.Err() == nil && tasks.cancelled(task.GetKey().GetDispatchId())
				w.metrics.taskDone(res, cancelled)
				if cancelled {
					return // nobody waits for the result
				}
				select {
				case out <- &sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Result{Result: sendable(res)}}:
				case <-gctx.Done():
				}
			}()
		}
	})
	return g.Wait()
}

// streamWindow and connWindow are the flow-control windows of the
// connection to the coordinator, the coordinator's own
// (coordinator.streamWindow): a batch's tasks of 1,700 ranges each arrive
// without waiting for window updates.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)
