package worker

import (
	"errors"
	"fmt"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/schema"
	"github.com/sluice-stream/sluice/steps"
)

// decoders builds the Schema Registry decoders a program needs: nil, nil
// for a JSON source. Nothing is fetched until a record needs a schema.
func decoders(prog *steps.Program, src *sluicev1.KafkaSource) (key, value steps.Decoder, err error) {
	if !prog.DecodesKey() && !prog.DecodesValue() {
		return nil, nil, nil
	}
	client, err := schema.NewClient(src.GetSchemaRegistry())
	if ce := (*schema.ConfigError)(nil); errors.As(err, &ce) {
		return nil, nil, &steps.FieldError{Field: ce.Field, Err: ce.Err}
	} else if err != nil {
		return nil, nil, fmt.Errorf("source.schema_registry: %w", err)
	}
	if prog.DecodesKey() {
		d, err := schema.NewDecoder(client, src.GetKeyFormat(), true)
		if err != nil {
			return nil, nil, &steps.FieldError{Field: "source.key_format", Err: err}
		}
		key = d
	}
	if prog.DecodesValue() {
		d, err := schema.NewDecoder(client, src.GetValueFormat(), false)
		if err != nil {
			return nil, nil, &steps.FieldError{Field: "source.value_format", Err: err}
		}
		value = d
	}
	return key, value, nil
}
