package schema

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/common/types/ref"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/avrov2"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/jsonschema"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/protobuf"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Formats of source.value_format and source.key_format.
const (
	JSON       = "json"
	Avro       = "avro"
	Protobuf   = "protobuf"
	JSONSchema = "jsonschema"
)

// CheckFormat says what is wrong with a format name; "" is JSON.
func CheckFormat(f string) error {
	switch f {
	case "", JSON, Avro, Protobuf, JSONSchema:
		return nil
	}
	return fmt.Errorf("%q is not a format: want json, avro, protobuf or jsonschema", f)
}

// Decodes reports whether format f is decoded through the registry.
func Decodes(f string) bool { return f == Avro || f == Protobuf || f == JSONSchema }

// RecordError is a key or value that does not decode: it is not in the wire
// format, its schema id is unknown to the registry, or the payload does not
// match its schema. It is the record's fault.
type RecordError struct {
	Format string
	// SchemaID is the payload's schema id, 0 when it has none.
	SchemaID int
	Err      error
}

func (e *RecordError) Error() string {
	if e.SchemaID == 0 {
		return fmt.Sprintf("%s: %v", e.Format, e.Err)
	}
	return fmt.Sprintf("%s: schema id %d: %v", e.Format, e.SchemaID, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// UnavailableError is a registry that could not answer: the task is
// retried (with backoff) rather than the record failed.
type UnavailableError struct {
	SchemaID int
	Err      error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("schema registry unavailable (looking up schema id %d): %v", e.SchemaID, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Temporary marks the error as not the record's fault.
func (e *UnavailableError) Temporary() bool { return true }

// errNotFound is an unknown schema id.
var errNotFound = errors.New("not found in the schema registry")

// notFoundTTL is how long an unknown schema id is remembered, so that a run
// of records with it (skipped) does not ask the registry for each.
const notFoundTTL = 10 * time.Second

// maxNotFound bounds the unknown ids remembered.
const maxNotFound = 1024

// maxMessageIndexes bounds the Protobuf message-index list of a payload.
const maxMessageIndexes = 64

// Decoder decodes the keys or the values of records in one format. It is safe
// for concurrent use.
type Decoder struct {
	format string
	client schemaregistry.Client
	side   serde.Type

	avro *avrov2.Deserializer
	pb   *protobuf.Deserializer
	js   *jsonschema.Deserializer
	pbd  *descriptors
	avs  *avroSchemas

	mu       sync.Mutex
	notFound map[int]time.Time
}

// NewDecoder returns a decoder of format for the keys (key true) or the
// values of records, reading schemas through client.
func NewDecoder(client schemaregistry.Client, format string, key bool) (*Decoder, error) {
	d := &Decoder{format: format, client: client, side: serde.ValueSerde, notFound: map[int]time.Time{}}
	if key {
		d.side = serde.KeySerde
	}
	var err error
	switch format {
	case Avro:
		d.avro, err = avrov2.NewDeserializer(client, d.side, avrov2.NewDeserializerConfig())
		d.avs = newAvroSchemas(client)
	case Protobuf:
		d.pb, err = protobuf.NewDeserializer(client, d.side, protobuf.NewDeserializerConfig())
		d.pbd = newDescriptors(client)
	case JSONSchema:
		// Parsed, not validated: the producer's serializer validates, and
		// the deserializer's validation wants a type of its own.
		d.js, err = jsonschema.NewDeserializer(client, d.side, jsonschema.NewDeserializerConfig())
	default:
		return nil, fmt.Errorf("schema: %q is not a registry format", format)
	}
	if err != nil {
		return nil, fmt.Errorf("schema: %s deserializer: %w", format, err)
	}
	return d, nil
}

// Decode returns the CEL value of data, the key or value of a record of
// topic. An empty or null payload is null. Errors are *RecordError, or
// *UnavailableError when the registry could not answer.
func (d *Decoder) Decode(topic string, data []byte) (v ref.Val, err error) {
	if len(data) == 0 {
		return nullValue, nil
	}
	if len(data) < 5 || data[0] != 0 {
		return nil, &RecordError{Format: d.format, Err: errors.New(
			"not in the Schema Registry wire format (magic byte 0, then a 4-byte schema id)")}
	}
	id := int(binary.BigEndian.Uint32(data[1:5]))
	if err := d.lookup(topic, id); err != nil {
		return nil, err
	}
	// The deserializers index into what they parse: a payload crafted to
	// make them panic is a malformed payload, not a crashed worker.
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, &RecordError{Format: d.format, SchemaID: id, Err: fmt.Errorf("malformed payload: %v", p)}
		}
	}()
	switch d.format {
	case Avro:
		s, err := d.avs.schema(d.subject(topic), id)
		if err != nil {
			return nil, d.classify(id, err)
		}
		if err := checkAvro(s, data[5:]); err != nil {
			return nil, &RecordError{Format: d.format, SchemaID: id, Err: err}
		}
		var out any
		if err := d.avro.DeserializeInto(topic, data, &out); err != nil {
			return nil, d.classify(id, err)
		}
		return fromAvroSchema(s, out), nil
	case Protobuf:
		md, err := d.pbd.message(d.subject(topic), id, data[5:])
		if err != nil {
			return nil, d.classify(id, err)
		}
		msg := dynamicpb.NewMessage(md)
		if err := d.pb.DeserializeInto(topic, data, msg); err != nil {
			return nil, d.classify(id, err)
		}
		return fromProto(msg.ProtoReflect()), nil
	default:
		var out any
		if err := d.js.DeserializeInto(topic, data, &out); err != nil {
			return nil, d.classify(id, err)
		}
		return fromJSON(out), nil
	}
}

func (d *Decoder) subject(topic string) string {
	if d.side == serde.KeySerde {
		return topic + "-key"
	}
	return topic + "-value"
}

// lookup makes sure the schema id is known, so that an unknown one is told
// apart from a payload that does not match its schema. The client caches
// what it finds; unknown ids are remembered here for notFoundTTL.
func (d *Decoder) lookup(topic string, id int) error {
	d.mu.Lock()
	at, ok := d.notFound[id]
	d.mu.Unlock()
	if ok && time.Since(at) < notFoundTTL {
		return &RecordError{Format: d.format, SchemaID: id, Err: errNotFound}
	}
	_, err := d.client.GetBySubjectAndID(d.subject(topic), id)
	if err == nil {
		return nil
	}
	rerr := d.classify(id, err)
	var re *RecordError
	if errors.As(rerr, &re) && errors.Is(re.Err, errNotFound) {
		d.mu.Lock()
		if len(d.notFound) >= maxNotFound {
			clear(d.notFound)
		}
		d.notFound[id] = time.Now()
		d.mu.Unlock()
	}
	return rerr
}

// classify turns a deserializer's or the client's error into a
// *RecordError or an *UnavailableError.
func (d *Decoder) classify(id int, err error) error {
	var re *RecordError
	if errors.As(err, &re) {
		return err
	}
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return &RecordError{Format: d.format, SchemaID: id, Err: errNotFound}
	}
	if unavailable(err) {
		return &UnavailableError{SchemaID: id, Err: err}
	}
	if errors.Is(err, ErrTooLarge) {
		return &RecordError{Format: d.format, SchemaID: id, Err: err}
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "malformed") && !strings.HasPrefix(msg, "schema") {
		msg = "malformed payload: " + msg
	}
	return &RecordError{Format: d.format, SchemaID: id, Err: errors.New(msg)}
}
