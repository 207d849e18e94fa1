package coordinator

import (
	"errors"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/schema"
)

// validateFormats checks source.key_format, value_format and, when one of
// them needs it, schema_registry.
func validateFormats(src *sluicev1.KafkaSource) error {
	if err := schema.CheckFormat(src.GetValueFormat()); err != nil {
		return invalid("source.value_format", "%v", err)
	}
	if err := schema.CheckFormat(src.GetKeyFormat()); err != nil {
		return invalid("source.key_format", "%v", err)
	}
	reg := src.GetSchemaRegistry()
	if !schema.Decodes(src.GetValueFormat()) && !schema.Decodes(src.GetKeyFormat()) {
		if reg != nil {
			return invalid("source.schema_registry", "set only with a key_format or value_format of avro, protobuf or jsonschema")
		}
		return nil
	}
	var ce *schema.ConfigError
	if err := schema.CheckConfig("source.schema_registry", reg); errors.As(err, &ce) {
		return invalid(ce.Field, "%v", ce.Err)
	} else if err != nil {
		return invalid("source.schema_registry", "%v", err)
	}
	return nil
}
