package steps

import (
	"errors"
	"fmt"

	"cel.dev/cel-go/common/types/ref"

	"github.com/sluice-stream/sluice/record"
)

// Decoder turns a record's key or value, in a Schema Registry format, into
// the CEL value of `record_key` or `record`. An error is the record's fault
// (and follows the record error policy) unless it has a Temporary method that
// returns true: the registry could not answer, and the task is retried.
type Decoder interface {
	Decode(topic string, data []byte) (ref.Val, error)
}

// Fields the decoding errors name.
const (
	valueFormatField = "source.value_format"
	keyFormatField   = "source.key_format"
)

// decoders are a Runner's key and value decoders; nil when neither is
// decoded, so that a JSON job pays one nil check per record.
type decoders struct {
	key, value         Decoder
	keyField, valField *expr // named in record errors
}

// SetDecoders decodes every record's key (when key is not nil) into
// `record_key` and its value (when value is not nil) into `record`, before
// the steps run. The program must have been compiled from a spec whose
// source.key_format or value_format asks for them.
func (r *Runner) SetDecoders(key, value Decoder) {
	if key == nil && value == nil {
		r.dec = nil
		return
	}
	r.dec = &decoders{key: key, value: value, keyField: &expr{field: keyFormatField}, valField: &expr{field: valueFormatField}}
}

// decode sets the activation's record and record_key. A temporary failure
// is returned as it is (not a *RecordError: nothing is counted); others go
// through fail.
func (r *Runner) decode(rec *record.Record) (handled bool, err error) {
	d := r.dec
	if d.value != nil {
		v, err := d.value.Decode(rec.Topic, rec.Value)
		if err != nil {
			return r.decodeFailed(rec, d.valField, err)
		}
		r.act.recordV = v
	}
	if d.key != nil {
		v, err := d.key.Decode(rec.Topic, rec.Key)
		if err != nil {
			return r.decodeFailed(rec, d.keyField, err)
		}
		r.act.recordKeyV = v
	}
	return false, nil
}

func (r *Runner) decodeFailed(rec *record.Record, x *expr, err error) (bool, error) {
	r.act.recordV, r.act.recordKeyV = nil, nil
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		r.in--
		return true, fmt.Errorf("record %s/%d offset %d: %s: %w", rec.Topic, rec.Partition, rec.Offset, x.field, err)
	}
	return true, r.fail(rec, &fieldErr{x, err})
}

// registryFormat reports whether a source format is decoded by a Decoder (the
// Schema Registry formats); "" and "json" are not.
func registryFormat(format string) bool { return format != "" && format != "json" }

// DecodesKey and DecodesValue report whether the program's source key and
// value are decoded: the Runner then needs SetDecoders.
func (p *Program) DecodesKey() bool   { return registryFormat(p.keyFormat) }
func (p *Program) DecodesValue() bool { return registryFormat(p.valueFormat) }
