package schematest

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/avrov2"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/jsonschema"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/protobuf"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoparse"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Client returns a registry client of r's URL, as a producer would use.
func (r *Registry) Client(t testing.TB) schemaregistry.Client {
	t.Helper()
	conf := schemaregistry.NewConfig(r.URL)
	if r.auth != "" {
		conf.HTTPClient = &http.Client{Transport: authTransport(r.auth)}
	}
	c, err := schemaregistry.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Avro returns a function that serializes generic Avro values (maps for
// records) with schema, registered in r, for the value (or key) of topic.
func (r *Registry) Avro(t testing.TB, schema string, key bool) func(topic string, v any) []byte {
	t.Helper()
	conf := avrov2.NewSerializerConfig()
	conf.AutoRegisterSchemas = false
	conf.UseSchemaID = r.Register(schema, "AVRO")
	s, err := avrov2.NewSerializer(r.Client(t), side(key), conf)
	if err != nil {
		t.Fatal(err)
	}
	return func(topic string, v any) []byte {
		msg := v
		if m, ok := v.(map[string]any); ok {
			msg = &m // the serializer wants a pointer
		}
		b, err := s.Serialize(topic, msg)
		if err != nil {
			t.Fatalf("avro serialize %v: %v", v, err)
		}
		return b
	}
}

// JSONSchema returns a function that serializes Go values with the JSON
// Schema reflected from their type, auto-registered in r.
func (r *Registry) JSONSchema(t testing.TB, key bool) func(topic string, v any) []byte {
	t.Helper()
	s, err := jsonschema.NewSerializer(r.Client(t), side(key), jsonschema.NewSerializerConfig())
	if err != nil {
		t.Fatal(err)
	}
	return func(topic string, v any) []byte {
		b, err := s.Serialize(topic, v)
		if err != nil {
			t.Fatalf("jsonschema serialize %v: %v", v, err)
		}
		return b
	}
}

// Proto parses a .proto source (which may import the well-known types) and
// returns its message types by name, for dynamic messages.
func Proto(t testing.TB, src string) map[string]protoreflect.MessageDescriptor {
	t.Helper()
	p := protoparse.Parser{
		Accessor: func(name string) (io.ReadCloser, error) {
			if name == "test.proto" {
				return io.NopCloser(strings.NewReader(src)), nil
			}
			return nil, os.ErrNotExist
		},
		LookupImport: desc.LoadFileDescriptor,
	}
	fds, err := p.ParseFiles("test.proto")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]protoreflect.MessageDescriptor{}
	var walk func(ms []*desc.MessageDescriptor)
	walk = func(ms []*desc.MessageDescriptor) {
		for _, m := range ms {
			out[m.GetName()] = m.UnwrapMessage()
			walk(m.GetNestedMessageTypes())
		}
	}
	walk(fds[0].GetMessageTypes())
	return out
}

// Protobuf returns a function that serializes Protobuf messages, their
// schema auto-registered in r.
func (r *Registry) Protobuf(t testing.TB, key bool) func(topic string, m *dynamicpb.Message) []byte {
	t.Helper()
	s, err := protobuf.NewSerializer(r.Client(t), side(key), protobuf.NewSerializerConfig())
	if err != nil {
		t.Fatal(err)
	}
	return func(topic string, m *dynamicpb.Message) []byte {
		b, err := s.Serialize(topic, m)
		if err != nil {
			t.Fatalf("protobuf serialize: %v", err)
		}
		return b
	}
}

func side(key bool) serde.Type {
	if key {
		return serde.KeySerde
	}
	return serde.ValueSerde
}

type authTransport string

func (a authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", string(a))
	return http.DefaultTransport.RoundTrip(req)
}
