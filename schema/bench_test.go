package schema_test

import (
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/schema"
	"github.com/sluice-stream/sluice/schema/schematest"
)

// BenchmarkDecodeAvro decodes a small record whose schema is cached.
func BenchmarkDecodeAvro(b *testing.B) {
	reg := schematest.New("")
	defer reg.Close()
	data := reg.Avro(b, `{"type":"record","name":"O","fields":[{"name":"country","type":"string"},{"name":"amount","type":"double"},{"name":"note","type":["null","string"]}]}`, false)(
		"t", map[string]any{"country": "FR", "amount": 2.5, "note": "x"})
	c, err := schema.NewClient(&sluicev1.SchemaRegistry{Url: reg.URL})
	if err != nil {
		b.Fatal(err)
	}
	d, err := schema.NewDecoder(c, schema.Avro, false)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode("t", data); err != nil {
			b.Fatal(err)
		}
	}
}
