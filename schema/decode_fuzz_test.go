package schema_test

import (
	"errors"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/schema"
	"github.com/sluice-stream/sluice/schema/schematest"
)

// FuzzDecode: whatever the payload, decoding returns a value or a
// *RecordError, and never panics.
func FuzzDecode(f *testing.F) {
	reg := schematest.New("")
	defer reg.Close()
	avroData := reg.Avro(f, avroSchema, false)("t", map[string]any{
		"id": int64(1), "qty": 1, "price": 1.0, "ratio": float32(1), "country": "DE", "paid": false,
		"blob": []byte{1}, "status": "NEW", "tags": []any{"a"}, "attrs": map[string]any{"k": int64(1)},
		"note": "n", "address": map[string]any{"city": "Bonn"}, "at": time.Unix(0, 0), "code": [2]byte{}, "alt": nil,
	})
	protoID := reg.Register(protoSchema, "PROTOBUF")
	jsonID := reg.Register(`{"type":"object"}`, "JSON")
	f.Add(uint8(0), avroData)
	f.Add(uint8(1), []byte{0, 0, 0, 0, byte(protoID), 0, 8, 1, 0x22, 2, 'F', 'R'})
	f.Add(uint8(2), []byte{0, 0, 0, 0, byte(jsonID), '{', '}'})
	c, err := schema.NewClient(&sluicev1.SchemaRegistry{Url: reg.URL})
	if err != nil {
		f.Fatal(err)
	}
	var decs []*schema.Decoder
	for _, format := range []string{schema.Avro, schema.Protobuf, schema.JSONSchema} {
		d, err := schema.NewDecoder(c, format, false)
		if err != nil {
			f.Fatal(err)
		}
		decs = append(decs, d)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		if len(data) > 4096 {
			return
		}
		v, err := decs[int(which)%len(decs)].Decode("t", data)
		var re *schema.RecordError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("error %v (%T), want a *RecordError", err, err)
		}
		if err == nil && v == nil {
			t.Fatal("no value and no error")
		}
	})
}
