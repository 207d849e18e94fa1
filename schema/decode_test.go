package schema_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/schema"
	"github.com/sluice-stream/sluice/schema/schematest"
)

func decoder(t *testing.T, reg *schematest.Registry, format string, key bool) *schema.Decoder {
	t.Helper()
	c, err := schema.NewClient(&sluicev1.SchemaRegistry{Url: reg.URL})
	if err != nil {
		t.Fatal(err)
	}
	d, err := schema.NewDecoder(c, format, key)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// native turns a CEL value into Go values that compare with ==, for tests.
func native(t *testing.T, v ref.Val) any {
	t.Helper()
	switch v := v.(type) {
	case types.Null:
		return nil
	case types.Timestamp:
		return v.Time
	case types.Duration:
		return v.Duration
	case types.Bytes:
		return string(v)
	}
	if l, ok := v.Value().([]ref.Val); ok {
		out := make([]any, len(l))
		for i, e := range l {
			out[i] = native(t, e)
		}
		return out
	}
	if m, ok := v.Value().(map[ref.Val]ref.Val); ok {
		out := map[any]any{}
		for k, e := range m {
			out[native(t, k)] = native(t, e)
		}
		return out
	}
	return v.Value()
}

func get(t *testing.T, v ref.Val, path ...string) any {
	t.Helper()
	for _, p := range path {
		m, ok := v.Value().(map[ref.Val]ref.Val)
		if !ok {
			t.Fatalf("%s: %v is not a map", p, v)
		}
		if v, ok = m[types.String(p)]; !ok {
			t.Fatalf("no field %s in %v", p, m)
		}
	}
	return native(t, v)
}

const avroSchema = `{"type": "record", "name": "Order", "namespace": "shop", "fields": [
  {"name": "id", "type": "long"},
  {"name": "qty", "type": "int"},
  {"name": "price", "type": "double"},
  {"name": "ratio", "type": "float"},
  {"name": "country", "type": "string"},
  {"name": "paid", "type": "boolean"},
  {"name": "blob", "type": "bytes"},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "SHIPPED"]}},
  {"name": "tags", "type": {"type": "array", "items": "string"}},
  {"name": "attrs", "type": {"type": "map", "values": "long"}},
  {"name": "note", "type": ["null", "string"], "default": null},
  {"name": "address", "type": {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 2}},
  {"name": "alt", "type": ["null", "string", "long"], "default": null}
]}`

func TestAvroTypes(t *testing.T) {
	reg := schematest.New("")
	defer reg.Close()
	ser := reg.Avro(t, avroSchema, false)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	data := ser("orders", map[string]any{
		"id": int64(1) << 40, "qty": 3, "price": 2.5, "ratio": float32(0.5), "country": "FR", "paid": true,
		"blob": []byte{1, 2}, "status": "SHIPPED", "tags": []any{"a", "b"}, "attrs": map[string]any{"x": int64(7)},
		"note": nil, "address": map[string]any{"city": "Lyon"}, "at": at, "code": [2]byte{'o', 'k'},
	})
	v, err := decoder(t, reg, schema.Avro, false).Decode("orders", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"id"}, int64(1) << 40},
		{[]string{"qty"}, int64(3)},
		{[]string{"price"}, 2.5},
		{[]string{"ratio"}, 0.5},
		{[]string{"country"}, "FR"},
		{[]string{"paid"}, true},
		{[]string{"blob"}, "\x01\x02"},
		{[]string{"status"}, "SHIPPED"},
		{[]string{"note"}, nil},
		{[]string{"address", "city"}, "Lyon"},
		{[]string{"at"}, at},
		{[]string{"code"}, "ok"},
	} {
		if got := get(t, v, c.path...); got != c.want {
			t.Errorf("%v = %#v, want %#v", c.path, got, c.want)
		}
	}
	if got := get(t, v, "tags"); len(got.([]any)) != 2 || got.([]any)[1] != "b" {
		t.Errorf("tags = %v", got)
	}
	if got := get(t, v, "attrs"); got.(map[any]any)["x"] != int64(7) {
		t.Errorf("attrs = %v", got)
	}
	// A union is its branch's value.
	data = ser("orders", map[string]any{
		"id": int64(1), "qty": 1, "price": 1.0, "ratio": float32(1), "country": "DE", "paid": false,
		"blob": []byte{}, "status": "NEW", "tags": []any{}, "attrs": map[string]any{},
		"note": "gift", "address": map[string]any{"city": "Bonn"}, "at": at, "code": [2]byte{}, "alt": int64(5),
	})
	v, err = decoder(t, reg, schema.Avro, false).Decode("orders", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, v, "note"); got != "gift" {
		t.Errorf("note = %#v, want gift", got)
	}
	if got := get(t, v, "alt"); got != int64(5) {
		t.Errorf("alt = %#v, want 5", got)
	}
}

const protoSchema = `syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
message Order {
  int64 id = 1;
  uint32 qty = 2;
  double price = 3;
  string country = 4;
  bytes blob = 5;
  enum Status { NEW = 0; SHIPPED = 1; }
  Status status = 6;
  repeated string tags = 7;
  map<string, int64> attrs = 8;
  Address address = 9;
  google.protobuf.Timestamp at = 10;
  optional string note = 11;
  google.protobuf.Int64Value weight = 12;
  message Address { string city = 1; }
}
message Other { string x = 1; }
`

func TestProtobufTypes(t *testing.T) {
	reg := schematest.New("")
	defer reg.Close()
	mds := schematest.Proto(t, protoSchema)
	md := mds["Order"]
	m := dynamicpb.NewMessage(md)
	set := func(m *dynamicpb.Message, name string, v protoreflect.Value) {
		m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(name)), v)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	set(m, "id", protoreflect.ValueOfInt64(-5))
	set(m, "qty", protoreflect.ValueOfUint32(3))
	set(m, "price", protoreflect.ValueOfFloat64(2.5))
	set(m, "country", protoreflect.ValueOfString("FR"))
	set(m, "blob", protoreflect.ValueOfBytes([]byte{1}))
	set(m, "status", protoreflect.ValueOfEnum(1))
	tags := m.Mutable(md.Fields().ByName("tags")).List()
	tags.Append(protoreflect.ValueOfString("a"))
	attrs := m.Mutable(md.Fields().ByName("attrs")).Map()
	attrs.Set(protoreflect.ValueOfString("x").MapKey(), protoreflect.ValueOfInt64(7))
	addr := dynamicpb.NewMessage(mds["Address"])
	set(addr, "city", protoreflect.ValueOfString("Lyon"))
	set(m, "address", protoreflect.ValueOfMessage(addr))
	ts := dynamicpb.NewMessage(timestamppb.New(at).ProtoReflect().Descriptor())
	set(ts, "seconds", protoreflect.ValueOfInt64(at.Unix()))
	set(ts, "nanos", protoreflect.ValueOfInt32(int32(at.Nanosecond())))
	set(m, "at", protoreflect.ValueOfMessage(ts))
	w := dynamicpb.NewMessage(wrapperspb.Int64(0).ProtoReflect().Descriptor())
	set(w, "value", protoreflect.ValueOfInt64(70))
	set(m, "weight", protoreflect.ValueOfMessage(w))

	data := reg.Protobuf(t, false)("orders", m)
	v, err := decoder(t, reg, schema.Protobuf, false).Decode("orders", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"id"}, int64(-5)},
		{[]string{"qty"}, uint64(3)},
		{[]string{"price"}, 2.5},
		{[]string{"country"}, "FR"},
		{[]string{"blob"}, "\x01"},
		{[]string{"status"}, "SHIPPED"},
		{[]string{"address", "city"}, "Lyon"},
		{[]string{"at"}, at},
		{[]string{"note"}, nil}, // optional, not set
		{[]string{"weight"}, int64(70)},
	} {
		if got := get(t, v, c.path...); got != c.want {
			t.Errorf("%v = %#v, want %#v", c.path, got, c.want)
		}
	}
	if got := get(t, v, "attrs"); got.(map[any]any)["x"] != int64(7) {
		t.Errorf("attrs = %v", got)
	}

	// The second message of the file: message index 1.
	o := dynamicpb.NewMessage(mds["Other"])
	set(o, "x", protoreflect.ValueOfString("y"))
	v, err = decoder(t, reg, schema.Protobuf, false).Decode("others", reg.Protobuf(t, false)("others", o))
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, v, "x"); got != "y" {
		t.Errorf("x = %#v", got)
	}
}

type widget struct {
	Name  string  `json:"name"`
	Count int     `json:"count"`
	Price float64 `json:"price"`
}

func TestJSONSchemaTypes(t *testing.T) {
	reg := schematest.New("")
	defer reg.Close()
	data := reg.JSONSchema(t, true)("w", widget{Name: "bolt", Count: 3, Price: 1.5})
	v, err := decoder(t, reg, schema.JSONSchema, true).Decode("w", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, v, "name"); got != "bolt" {
		t.Errorf("name = %v", got)
	}
	if got := get(t, v, "count"); got != 3.0 {
		t.Errorf("count = %#v, want the double 3", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	reg := schematest.New("")
	defer reg.Close()
	reg.Avro(t, `{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}`, false)     // id 1
	reg.Register("syntax = \"proto3\";\nmessage M { string s = 1; }\n", "PROTOBUF")              // id 2
	reg.Register(`{"type":"record","name":"S","fields":[{"name":"s","type":"string"}]}`, "AVRO") // id 3
	reg.Register(`{"type":"array","items":"null"}`, "AVRO")                                      // id 4
	for _, c := range []struct {
		name, format string
		data         []byte
		want         string
		id           int
	}{
		{"not wire format", schema.Avro, []byte(`{"n":1}`), "avro: not in the Schema Registry wire format", 0},
		{"short", schema.Avro, []byte{0, 0, 0}, "avro: not in the Schema Registry wire format", 0},
		{"unknown id", schema.Avro, []byte{0, 0, 0, 0, 99, 2}, "avro: schema id 99: not found in the schema registry", 99},
		{"truncated", schema.Avro, []byte{0, 0, 0, 0, 3, 0x06, 'a'}, "avro: schema id 3: malformed payload: truncated", 3},
		{"huge array", schema.Avro, []byte{0, 0, 0, 0, 4, 0xfe, 0xff, 0xff, 0xff, 0x0f}, "avro: schema id 4: malformed payload: an array or map declares 2147483647 elements", 4},
		{"negative string length", schema.Avro, []byte{0, 0, 0, 0, 3, 0x01}, "avro: schema id 3: malformed payload", 3},
		{"proto index out of range", schema.Protobuf, []byte{0, 0, 0, 0, 2, 2, 40}, "protobuf: schema id 2: malformed payload: message index 20", 2},
		{"proto huge index count", schema.Protobuf, []byte{0, 0, 0, 0, 2, 0xfe, 0xff, 0xff, 0xff, 0x0f}, "protobuf: schema id 2: malformed payload: no valid Protobuf message-index list", 2},
		{"proto bad payload", schema.Protobuf, []byte{0, 0, 0, 0, 2, 0, 0xff}, "protobuf: schema id 2: malformed payload", 2},
		{"jsonschema not json", schema.JSONSchema, []byte{0, 0, 0, 0, 1, '{'}, "jsonschema: schema id 1: malformed payload", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decoder(t, reg, c.format, false).Decode("t", c.data)
			var re *schema.RecordError
			if !errors.As(err, &re) || re.SchemaID != c.id || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("error %v (%T), want a *RecordError for schema id %d starting %q", err, err, c.id, c.want)
			}
		})
	}
	if v, err := decoder(t, reg, schema.Avro, false).Decode("t", nil); err != nil || v != types.NullValue {
		t.Errorf("empty payload: %v, %v; want null", v, err)
	}
}

func TestUnknownIDIsRemembered(t *testing.T) {
	reg := schematest.New("")
	defer reg.Close()
	d := decoder(t, reg, schema.Avro, false)
	for range 5 {
		if _, err := d.Decode("t", []byte{0, 0, 0, 0, 42, 0}); err == nil {
			t.Fatal("no error")
		}
	}
	if n := reg.Lookups.Load(); n != 1 {
		t.Errorf("%d lookups of the unknown id, want 1", n)
	}
}

func TestRegistryUnavailable(t *testing.T) {
	reg := schematest.New("")
	data := reg.Avro(t, `{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}`, false)("t", map[string]any{"n": int64(1)})
	d := decoder(t, reg, schema.Avro, false)
	reg.Close()
	_, err := d.Decode("t", data)
	var ue *schema.UnavailableError
	if !errors.As(err, &ue) || !ue.Temporary() {
		t.Fatalf("error %v (%T), want an *UnavailableError", err, err)
	}
}

func TestRegistryAuth(t *testing.T) {
	reg := schematest.New("Bearer s3cret")
	defer reg.Close()
	data := reg.Avro(t, `{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}`, false)("t", map[string]any{"n": int64(4)})
	for _, c := range []struct {
		token string
		ok    bool
	}{{"s3cret", true}, {"wrong", false}} {
		cl, err := schema.NewClient(&sluicev1.SchemaRegistry{Url: reg.URL, BearerToken: c.token})
		if err != nil {
			t.Fatal(err)
		}
		d, _ := schema.NewDecoder(cl, schema.Avro, false)
		v, err := d.Decode("t", data)
		if c.ok && (err != nil || get(t, v, "n") != int64(4)) {
			t.Errorf("token %s: %v, %v", c.token, v, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "401")) {
			t.Errorf("token %s: error %v, want a 401", c.token, err)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	for _, c := range []struct {
		reg   *sluicev1.SchemaRegistry
		field string
		want  string
	}{
		{nil, "source.schema_registry.url", "required"},
		{&sluicev1.SchemaRegistry{Url: "ftp://r:8081"}, "source.schema_registry.url", "want an http:// or https:// URL"},
		{&sluicev1.SchemaRegistry{Url: "http://"}, "source.schema_registry.url", "has no host"},
		{&sluicev1.SchemaRegistry{Url: "http://u:p@r:8081"}, "source.schema_registry.url", "put credentials in username"},
		{&sluicev1.SchemaRegistry{Url: "http://r:8081", Username: "u"}, "source.schema_registry.username", "both"},
		{&sluicev1.SchemaRegistry{Url: "http://r:8081", Username: "u", Password: "p", BearerToken: "t"}, "source.schema_registry.bearer_token", "not both"},
		{&sluicev1.SchemaRegistry{Url: "http://r:8081", Password: strings.Repeat("p", 5000), Username: "u"}, "source.schema_registry.password", "more than 4096"},
		{&sluicev1.SchemaRegistry{Url: "https://r:8081", CaPem: "nope"}, "source.schema_registry.ca_pem", "no PEM certificate"},
		{&sluicev1.SchemaRegistry{Url: "http://" + strings.Repeat("r", 3000)}, "source.schema_registry.url", "more than 2048"},
	} {
		err := schema.CheckConfig("source.schema_registry", c.reg)
		var ce *schema.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want field %s and %q", c.reg, err, c.field, c.want)
		}
	}
	if err := schema.CheckConfig("source.schema_registry", &sluicev1.SchemaRegistry{Url: "https://r.example:8081/path"}); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestRegistryResponseTooLarge(t *testing.T) {
	reg := schematest.New("")
	defer reg.Close()
	doc := strings.Repeat("x", schema.MaxResponseBytes)
	id := reg.Register(`{"type":"record","name":"R","doc":"`+doc+`","fields":[{"name":"n","type":"long"}]}`, "AVRO")
	_, err := decoder(t, reg, schema.Avro, false).Decode("t", []byte{0, 0, 0, 0, byte(id), 2})
	var re *schema.RecordError
	if !errors.As(err, &re) || re.SchemaID != id || !strings.Contains(err.Error(), "schema registry response exceeds 1048576 bytes") {
		t.Fatalf("error %v (%T), want a *RecordError saying the response is too large", err, err)
	}
}

func TestRegistryTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	c, err := schema.NewClient(&sluicev1.SchemaRegistry{Url: srv.URL, Timeout: durationpb.New(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := schema.NewDecoder(c, schema.Avro, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Decode("t", []byte{0, 0, 0, 0, 1, 2})
	var ue *schema.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T), want an *UnavailableError", err, err)
	}
}
