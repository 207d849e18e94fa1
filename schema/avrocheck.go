package schema

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hamba/avro/v2"
)

// maxZeroSizeElements bounds the array and map elements a payload may
// declare beyond its length: elements that take no bytes (nulls, empty
// records) could otherwise make a few bytes declare billions of them.
const maxZeroSizeElements = 1 << 16

// checkAvro walks an Avro binary payload with its writer schema before the
// deserializer reads it, so that a malformed payload is a record error
// rather than a crashed worker: hamba/avro allocates an array's declared
// length before reading its elements, and takes a truncated payload for one
// ending in zero values.
func checkAvro(s avro.Schema, data []byte) error {
	c := avroChecker{data: data, budget: len(data) + maxZeroSizeElements}
	if err := c.walk(s, 0); err != nil {
		return fmt.Errorf("malformed payload: %w", err)
	}
	return nil
}

type avroChecker struct {
	data   []byte
	pos    int
	budget int // array and map elements still allowed
}

var errTruncated = errors.New("truncated")

func (c *avroChecker) long() (int64, error) {
	v, n := binary.Varint(c.data[c.pos:])
	if n <= 0 {
		if n == 0 {
			return 0, errTruncated
		}
		return 0, errors.New("a varint overflows 64 bits")
	}
	c.pos += n
	return v, nil
}

func (c *avroChecker) skip(n int64) error {
	if n < 0 || n > int64(len(c.data)-c.pos) {
		return errTruncated
	}
	c.pos += int(n)
	return nil
}

// maxDepth bounds the nesting of recursive schemas walked.
const maxDepth = 256

func (c *avroChecker) walk(s avro.Schema, depth int) error {
	if depth > maxDepth {
		return errors.New("nested too deep")
	}
	switch s.Type() {
	case avro.Null:
		return nil
	case avro.Boolean:
		return c.skip(1)
	case avro.Int, avro.Long:
		_, err := c.long()
		return err
	case avro.Float:
		return c.skip(4)
	case avro.Double:
		return c.skip(8)
	case avro.String, avro.Bytes:
		n, err := c.long()
		if err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("negative %s length %d", s.Type(), n)
		}
		return c.skip(n)
	}
	switch s := s.(type) {
	case *avro.RefSchema:
		return c.walk(s.Schema(), depth+1)
	case *avro.FixedSchema:
		return c.skip(int64(s.Size()))
	case *avro.EnumSchema:
		i, err := c.long()
		if err != nil {
			return err
		}
		if i < 0 || i >= int64(len(s.Symbols())) {
			return fmt.Errorf("enum %s has no symbol %d", s.FullName(), i)
		}
		return nil
	case *avro.RecordSchema:
		for _, f := range s.Fields() {
			if err := c.walk(f.Type(), depth+1); err != nil {
				return err
			}
		}
		return nil
	case *avro.UnionSchema:
		i, err := c.long()
		if err != nil {
			return err
		}
		if i < 0 || i >= int64(len(s.Types())) {
			return fmt.Errorf("union has no branch %d", i)
		}
		return c.walk(s.Types()[i], depth+1)
	case *avro.ArraySchema:
		return c.blocks(depth, func() error { return c.walk(s.Items(), depth+1) })
	case *avro.MapSchema:
		return c.blocks(depth, func() error {
			if err := c.walk(avro.NewPrimitiveSchema(avro.String, nil), depth+1); err != nil {
				return err
			}
			return c.walk(s.Values(), depth+1)
		})
	}
	return fmt.Errorf("unexpected schema type %s", s.Type())
}

// blocks walks the blocks of an array or map: a count, negative when a
// byte size follows, then as many elements, until a count of 0.
func (c *avroChecker) blocks(depth int, elem func() error) error {
	for {
		n, err := c.long()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if n < 0 {
			n = -n
			if _, err := c.long(); err != nil {
				return err
			}
		}
		if n < 0 || n > int64(c.budget) {
			return fmt.Errorf("an array or map declares %d elements, more than the payload can hold", n)
		}
		c.budget -= int(n)
		for range n {
			if err := elem(); err != nil {
				return err
			}
		}
	}
}
