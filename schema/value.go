package schema

import (
	"encoding/json"
	"math/big"
	"reflect"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var nullValue ref.Val = types.NullValue

var adapter = types.DefaultTypeAdapter

// fromAvro converts the generic form hamba/avro decodes into (maps, slices,
// Go scalars, time.Time, time.Duration, *big.Rat, [N]byte) to CEL values.
func fromAvro(v any) ref.Val {
	switch v := v.(type) {
	case nil:
		return types.NullValue
	case bool:
		return types.Bool(v)
	case int:
		return types.Int(v)
	case int32:
		return types.Int(v)
	case int64:
		return types.Int(v)
	case float32:
		return types.Double(v)
	case float64:
		return types.Double(v)
	case string:
		return types.String(v)
	case []byte:
		return types.Bytes(v)
	case time.Time:
		return types.Timestamp{Time: v.UTC()}
	case time.Duration:
		return types.Duration{Duration: v}
	case *big.Rat:
		f, _ := v.Float64()
		return types.Double(f)
	case map[string]any:
		m := make(map[ref.Val]ref.Val, len(v))
		for k, e := range v {
			m[types.String(k)] = fromAvro(e)
		}
		return types.NewRefValMap(adapter, m)
	case []any:
		l := make([]ref.Val, len(v))
		for i, e := range v {
			l[i] = fromAvro(e)
		}
		return types.NewRefValList(adapter, l)
	}
	// fixed: a [N]byte array.
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Array && rv.Type().Elem().Kind() == reflect.Uint8 {
		b := make([]byte, rv.Len())
		reflect.Copy(reflect.ValueOf(b), rv)
		return types.Bytes(b)
	}
	return adapter.NativeToValue(v)
}

// fromJSON converts encoding/json's generic form.
func fromJSON(v any) ref.Val { return fromAvro(v) }

// fromProto converts a message to a map by field name.
func fromProto(m protoreflect.Message) ref.Val {
	if v, ok := wellKnown(m); ok {
		return v
	}
	fields := m.Descriptor().Fields()
	out := make(map[ref.Val]ref.Val, fields.Len())
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.HasPresence() && !m.Has(fd) {
			out[types.String(fd.Name())] = types.NullValue
			continue
		}
		out[types.String(fd.Name())] = fromField(fd, m.Get(fd))
	}
	return types.NewRefValMap(adapter, out)
}

func fromField(fd protoreflect.FieldDescriptor, v protoreflect.Value) ref.Val {
	switch {
	case fd.IsList():
		l := v.List()
		out := make([]ref.Val, l.Len())
		for i := range out {
			out[i] = fromScalar(fd, l.Get(i))
		}
		return types.NewRefValList(adapter, out)
	case fd.IsMap():
		m := v.Map()
		out := make(map[ref.Val]ref.Val, m.Len())
		m.Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
			out[fromScalar(fd.MapKey(), k.Value())] = fromScalar(fd.MapValue(), e)
			return true
		})
		return types.NewRefValMap(adapter, out)
	}
	return fromScalar(fd, v)
}

func fromScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) ref.Val {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return types.Bool(v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return types.Int(v.Int())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return types.Uint(v.Uint())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return types.Double(v.Float())
	case protoreflect.StringKind:
		return types.String(v.String())
	case protoreflect.BytesKind:
		return types.Bytes(append([]byte(nil), v.Bytes()...))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return types.String(ev.Name())
		}
		return types.Int(v.Enum())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return fromProto(v.Message())
	}
	return types.NullValue
}

// wellKnown converts the well-known types that have a CEL form of their own.
func wellKnown(m protoreflect.Message) (ref.Val, bool) {
	d := m.Descriptor()
	if d.ParentFile().Package() != "google.protobuf" {
		return nil, false
	}
	get := func(name protoreflect.Name) protoreflect.Value { return m.Get(d.Fields().ByName(name)) }
	switch d.Name() {
	case "Timestamp":
		return types.Timestamp{Time: time.Unix(get("seconds").Int(), get("nanos").Int()).UTC()}, true
	case "Duration":
		return types.Duration{Duration: time.Duration(get("seconds").Int())*time.Second + time.Duration(get("nanos").Int())}, true
	case "DoubleValue", "FloatValue", "Int64Value", "Int32Value", "UInt64Value", "UInt32Value",
		"BoolValue", "StringValue", "BytesValue":
		fd := d.Fields().ByName("value")
		return fromScalar(fd, m.Get(fd)), true
	case "Struct", "Value", "ListValue":
		b, err := protojson.Marshal(m.Interface())
		if err != nil {
			return types.NullValue, true
		}
		v, err := parseJSON(b)
		if err != nil {
			return types.NullValue, true
		}
		return fromJSON(v), true
	}
	return nil, false
}

func parseJSON(b []byte) (any, error) {
	var v any
	err := json.Unmarshal(b, &v)
	return v, err
}
