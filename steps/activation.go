package steps

import (
	"unsafe"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	"github.com/sluice-stream/sluice/record"
)

// Bits of activation.have: which variables are cached for the current record.
const (
	haveKey = 1 << iota
	haveValue
	haveKeyBytes
	haveValueBytes
	haveJSON
	haveHeaders
	haveTopic
	havePartition
	haveOffset
	haveTimestamp
)

// activation resolves a record's variables lazily: a variable is converted the
// first time an expression reads it and cached until the record (or, for key
// and value, a map step) changes it. One activation serves all the records of a
// Runner, so resolving costs no allocation beyond the values themselves.
type activation struct {
	rec        *record.Record
	key, value []byte // current key and value: the record's, or a map step's
	usesJSON   bool
	have       uint16
	parsed     bool // json was parsed for this record

	keyV, valueV, keyBytesV, valueBytesV ref.Val
	headersV, partitionV, offsetV, tsV   ref.Val
	jsonV                                any
	jsonErr                              error

	// The topic rarely changes between records: keep its value across them.
	topic  string
	topicV ref.Val

	json jsonParser

	// The decoded source value and key (Schema Registry formats), set by
	// the Runner's decoders before the steps run; nil when not decoded.
	recordV, recordKeyV ref.Val
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) reset(rec *record.Record) {
	a.rec = rec
	a.key = rec.Key
	a.value = rec.Value
	a.have = 0
	a.jsonErr = nil
	// Drop references into the previous record's buffers.
	a.keyV, a.valueV, a.keyBytesV, a.valueBytesV, a.jsonV = nil, nil, nil, nil, nil
}

// release drops the references into the record's buffers that the
// activation holds, so that the reader's buffers are not kept alive.
func (a *activation) release() {
	a.reset(&emptyRecord)
	if a.parsed {
		a.json.release()
		a.parsed = false
	}
}

var emptyRecord record.Record

func (a *activation) setKey(k []byte) {
	a.key = k
	a.have &^= haveKey | haveKeyBytes
	a.keyV, a.keyBytesV = nil, nil
}

func (a *activation) setValue(v []byte) {
	a.value = v
	a.have &^= haveValue | haveValueBytes | haveJSON
	a.valueV, a.valueBytesV, a.jsonV = nil, nil, nil
	a.jsonErr = nil
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "key":
		if a.have&haveKey == 0 {
			a.keyV = types.String(bytesString(a.key))
			a.have |= haveKey
		}
		return a.keyV, true
	case "value":
		if a.have&haveValue == 0 {
			a.valueV = types.String(bytesString(a.value))
			a.have |= haveValue
		}
		return a.valueV, true
	case "json":
		if !a.usesJSON {
			return nil, false
		}
		if a.have&haveJSON == 0 {
			a.have |= haveJSON
			a.parsed = true
			v, err := a.json.parse(a.value)
			if err != nil {
				a.jsonErr = err
				a.jsonV = types.NewErr("%v", err)
			} else {
				a.jsonV = v
			}
		}
		return a.jsonV, true
	case "key_bytes":
		if a.have&haveKeyBytes == 0 {
			a.keyBytesV = types.Bytes(a.key)
			a.have |= haveKeyBytes
		}
		return a.keyBytesV, true
	case "value_bytes":
		if a.have&haveValueBytes == 0 {
			a.valueBytesV = types.Bytes(a.value)
			a.have |= haveValueBytes
		}
		return a.valueBytesV, true
	case "headers":
		if a.have&haveHeaders == 0 {
			m := make(map[string]string, len(a.rec.Headers))
			for _, h := range a.rec.Headers {
				m[h.Key] = string(h.Value)
			}
			a.headersV = types.NewStringStringMap(types.DefaultTypeAdapter, m)
			a.have |= haveHeaders
		}
		return a.headersV, true
	case "topic":
		if a.topicV == nil || a.topic != a.rec.Topic {
			a.topic = a.rec.Topic
			a.topicV = types.String(a.topic)
		}
		return a.topicV, true
	case "partition":
		if a.have&havePartition == 0 {
			a.partitionV = types.Int(a.rec.Partition)
			a.have |= havePartition
		}
		return a.partitionV, true
	case "offset":
		if a.have&haveOffset == 0 {
			a.offsetV = types.Int(a.rec.Offset)
			a.have |= haveOffset
		}
		return a.offsetV, true
	case "timestamp":
		if a.have&haveTimestamp == 0 {
			a.tsV = types.Timestamp{Time: a.rec.Timestamp.UTC()}
			a.have |= haveTimestamp
		}
		return a.tsV, true
	case "record":
		return a.recordV, a.recordV != nil
	case "record_key":
		return a.recordKeyV, a.recordKeyV != nil
	}
	return nil, false
}

// bytesString returns b as a string without copying. The key and value are
// only read while the record is processed, and everything a Runner keeps (an
// aggregate key, an output record, a map step's result, an error text) is
// copied out first, so the aliasing never outlives the bytes.
func bytesString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
