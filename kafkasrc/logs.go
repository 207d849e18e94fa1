package kafkasrc

import (
	"sync"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/hashicorp/go-hclog"
)

// logPump forwards one client's librdkafka logs to an hclog.Logger.
//
// The client is created with go.logs.channel set to ch; confluent-kafka-go
// runs its own goroutine that moves librdkafka's log queue onto ch and stops
// it when the client is closed. The pump's goroutine reads ch until stop is
// called, which must happen after the client is closed.
type logPump struct {
	ch   chan kafka.LogEvent
	done chan struct{}
	wg   sync.WaitGroup
}

func newLogPump(logger hclog.Logger) *logPump {
	p := &logPump{
		ch:   make(chan kafka.LogEvent, 256),
		done: make(chan struct{}),
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case ev := <-p.ch:
				logEvent(logger, ev)
			case <-p.done:
				return
			}
		}
	}()
	return p
}

// configure adds the properties that send the client's logs to the pump.
func (p *logPump) configure(cm kafka.ConfigMap) {
	cm["go.logs.channel.enable"] = true
	cm["go.logs.channel"] = p.ch
}

// stop ends the pump's goroutine. Call it after the client is closed.
func (p *logPump) stop() {
	close(p.done)
	p.wg.Wait()
	// Drain what is left without blocking: the client is closed, nothing
	// writes to ch any more.
	for {
		select {
		case <-p.ch:
		default:
			return
		}
	}
}

// logEvent logs one librdkafka log line at the hclog level matching its
// syslog level.
func logEvent(logger hclog.Logger, ev kafka.LogEvent) {
	var level hclog.Level
	switch {
	case ev.Level <= 3: // emerg, alert, crit, err
		level = hclog.Error
	case ev.Level == 4: // warning
		level = hclog.Warn
	case ev.Level == 5: // notice
		level = hclog.Info
	case ev.Level == 6: // info
		level = hclog.Debug
	default: // debug
		level = hclog.Trace
	}
	logger.Log(level, ev.Message, "client", ev.Name, "tag", ev.Tag)
}
