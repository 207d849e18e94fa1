package coordinator

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// maxWindowsPerBatch bounds length/slide: each batch is folded into that
// many open windows.
const maxWindowsPerBatch = 100

// validateWindow checks aggregate.window: processing-time windows are
// made of whole batches, so length and slide are multiples of the batch
// interval; event-time windows are in milliseconds.
func validateWindow(spec *sluicev1.JobSpec) error {
	aw := spec.GetAggregate().GetWindow()
	if aw == nil {
		return nil
	}
	interval, unit := time.Second, "batch_interval"
	if d := spec.GetBatchInterval().AsDuration(); d > 0 {
		interval = d
	}
	if et := aw.GetEventTime(); et != nil {
		// Event-time windows are on record times, in milliseconds.
		interval, unit = time.Millisecond, "a millisecond"
		if wd := et.GetWatermarkDelay(); wd != nil {
			if err := wd.CheckValid(); err != nil {
				return invalid("aggregate.window.event_time.watermark_delay", "%v", err)
			}
			if d := wd.AsDuration(); d < 0 || d > maxDuration {
				return invalid("aggregate.window.event_time.watermark_delay", "%s: use 0 to 24h", d)
			}
		}
	}
	if aw.GetLength() == nil {
		return invalid("aggregate.window.length", "a window length is required (a multiple of %s %s)", unit, interval)
	}
	check := func(field string, d *durationpb.Duration) (time.Duration, error) {
		if err := d.CheckValid(); err != nil {
			return 0, invalid(field, "%v", err)
		}
		v := d.AsDuration()
		switch {
		case v <= 0:
			return 0, invalid(field, "%s: must be positive", v)
		case v > maxDuration:
			return 0, invalid(field, "%s is above the 24h maximum", v)
		case v%interval != 0 && unit == "batch_interval":
			return 0, invalid(field, "%s is not a multiple of batch_interval %s: windows are made of whole batches", v, interval)
		case v%interval != 0:
			return 0, invalid(field, "%s is not a whole number of milliseconds", v)
		}
		return v, nil
	}
	length, err := check("aggregate.window.length", aw.GetLength())
	if err != nil {
		return err
	}
	slide := length
	if aw.GetSlide() != nil {
		if slide, err = check("aggregate.window.slide", aw.GetSlide()); err != nil {
			return err
		}
	}
	if slide > length {
		return invalid("aggregate.window.slide", "%s is above aggregate.window.length %s: batches between windows would be in none", slide, length)
	}
	if length/slide > maxWindowsPerBatch {
		return invalid("aggregate.window.slide", "%s makes every batch part of %d windows of length %s, above %d: use a longer slide", slide, length/slide, length, maxWindowsPerBatch)
	}
	return nil
}
