package schema

import (
	"fmt"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/hamba/avro/v2"
	lru "github.com/hashicorp/golang-lru/v2"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// avroSchemas parses the writers' Avro schemas by schema id, so that the
// generic values the deserializer makes are converted with their schema: a
// union is then its branch's value, not the {"type": value} map of Avro's
// JSON encoding.
type avroSchemas struct {
	client schemaregistry.Client
	byID   *lru.Cache[int, avro.Schema]
}

func newAvroSchemas(client schemaregistry.Client) *avroSchemas {
	byID, _ := lru.New[int, avro.Schema](CacheSchemas)
	return &avroSchemas{client: client, byID: byID}
}

// schema returns the writer schema of id.
func (a *avroSchemas) schema(subject string, id int) (avro.Schema, error) {
	if s, ok := a.byID.Get(id); ok {
		return s, nil
	}
	info, err := a.client.GetBySubjectAndID(subject, id)
	if err != nil {
		return nil, err
	}
	s, err := a.parse(info, 0)
	if err != nil {
		return nil, fmt.Errorf("schema does not parse: %w", err)
	}
	a.byID.Add(id, s)
	return s, nil
}

// maxReferenceDepth bounds the chain of schema references followed.
const maxReferenceDepth = 16

// parse parses a schema after its references, as the deserializer does (in
// hamba/avro's cache of named types).
func (a *avroSchemas) parse(info schemaregistry.SchemaInfo, depth int) (avro.Schema, error) {
	if depth < maxReferenceDepth {
		for _, r := range info.References {
			meta, err := a.client.GetSchemaMetadataIncludeDeleted(r.Subject, r.Version, true)
			if err != nil {
				return nil, err
			}
			if _, err := a.parse(meta.SchemaInfo, depth+1); err != nil {
				return nil, err
			}
		}
	}
	return avro.Parse(info.Schema)
}

// fromAvroSchema converts a generic Avro value of schema s.
func fromAvroSchema(s avro.Schema, v any) ref.Val {
	if r, ok := s.(*avro.RefSchema); ok {
		s = r.Schema()
	}
	switch s := s.(type) {
	case *avro.RecordSchema:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		out := make(map[ref.Val]ref.Val, len(m))
		for _, f := range s.Fields() {
			if e, ok := m[f.Name()]; ok {
				out[types.String(f.Name())] = fromAvroSchema(f.Type(), e)
			}
		}
		return types.NewRefValMap(adapter, out)
	case *avro.ArraySchema:
		l, ok := v.([]any)
		if !ok {
			break
		}
		out := make([]ref.Val, len(l))
		for i, e := range l {
			out[i] = fromAvroSchema(s.Items(), e)
		}
		return types.NewRefValList(adapter, out)
	case *avro.MapSchema:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		out := make(map[ref.Val]ref.Val, len(m))
		for k, e := range m {
			out[types.String(k)] = fromAvroSchema(s.Values(), e)
		}
		return types.NewRefValMap(adapter, out)
	case *avro.UnionSchema:
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 {
			break
		}
		for name, e := range m {
			for _, b := range s.Types() {
				if typeName(b) == name {
					return fromAvroSchema(b, e)
				}
			}
		}
	}
	return fromAvro(v)
}

// typeName is the name hamba/avro keys a union's branch by.
func typeName(s avro.Schema) string {
	if r, ok := s.(*avro.RefSchema); ok {
		s = r.Schema()
	}
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	name := string(s.Type())
	if l, ok := s.(avro.LogicalTypeSchema); ok && l.Logical() != nil {
		name += "." + string(l.Logical().Type())
	}
	return name
}
