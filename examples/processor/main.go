// Command processor is a custom Sluice worker with a Go processor: "words"
// splits each line into lower-case words, leaving out the stop words its
// step's config lists, and emits one record per word, keyed by the word. A
// job that counts by key then counts words (see job.json).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/sluice-stream/sluice/record"
	"github.com/sluice-stream/sluice/worker"
)

func main() {
	coordinator := flag.String("coordinator", "127.0.0.1:7070", "comma-separated coordinator addresses")
	id := flag.String("id", "", "stable worker id (default hostname-pid)")
	slots := flag.Int("slots", 4, "tasks run at once")
	flag.Parse()

	cfg := worker.DefaultConfig()
	cfg.Coordinators = strings.Split(*coordinator, ",")
	cfg.ID = *id
	cfg.Slots = *slots
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "wordcount"})
	w, err := worker.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// Registered before Run: the worker tells the coordinator it has
	// "words", and only such workers get the tasks of jobs that use it.
	if err := w.RegisterProcessorFactory("words", newWords); err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// newWords makes the processor of one job's step from its config:
// {"stopwords": ["the", "a", ...]}. A bad config fails the job with this
// error, naming the step.
func newWords(config map[string]any) (worker.Processor, error) {
	stop := map[string]bool{}
	if v, ok := config["stopwords"]; ok {
		list, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("stopwords must be a list of strings, not %T", v)
		}
		for i, w := range list {
			s, ok := w.(string)
			if !ok {
				return nil, fmt.Errorf("stopwords[%d] must be a string, not %T", i, w)
			}
			stop[strings.ToLower(s)] = true
		}
	}
	return func(ctx context.Context, rec record.Record) ([]record.Record, error) {
		var out []record.Record
		for _, word := range strings.Fields(strings.ToLower(string(rec.Value))) {
			if !stop[word] {
				out = append(out, record.Record{Key: []byte(word), Value: []byte(word)})
			}
		}
		return out, nil // no words: the line is dropped
	}, nil
}
