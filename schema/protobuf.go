package schema

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoparse"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// descriptors parses the Protobuf schemas of the payloads, by schema id, so
// that each is decoded into a dynamic message of its own type: Sluice has
// no generated types of the users' messages.
type descriptors struct {
	client schemaregistry.Client
	files  *lru.Cache[int, *desc.FileDescriptor]
}

func newDescriptors(client schemaregistry.Client) *descriptors {
	files, _ := lru.New[int, *desc.FileDescriptor](CacheSchemas)
	return &descriptors{client: client, files: files}
}

// message returns the descriptor of the message a payload's indexes (rest,
// the payload after its schema id) name in schema id.
func (d *descriptors) message(subject string, id int, rest []byte) (protoreflect.MessageDescriptor, error) {
	indexes, err := messageIndexes(rest)
	if err != nil {
		return nil, err
	}
	fd, ok := d.files.Get(id)
	if !ok {
		info, err := d.client.GetBySubjectAndID(subject, id)
		if err != nil {
			return nil, err
		}
		if fd, err = parseFile(d.client, info); err != nil {
			return nil, fmt.Errorf("schema does not parse: %w", err)
		}
		d.files.Add(id, fd)
	}
	msgs := fd.GetMessageTypes()
	var md *desc.MessageDescriptor
	for _, i := range indexes {
		if i < 0 || i >= len(msgs) {
			return nil, fmt.Errorf("malformed payload: message index %d is not in the schema (%d messages)", i, len(msgs))
		}
		md = msgs[i]
		msgs = md.GetNestedMessageTypes()
	}
	return md.UnwrapMessage(), nil
}

// messageIndexes reads the message-index list: a zigzag varint count, then
// as many zigzag varints; a count of 0 is the first message, [0].
func messageIndexes(b []byte) ([]int, error) {
	n, read := binary.Varint(b)
	if read <= 0 || n < 0 || n > maxMessageIndexes {
		return nil, errors.New("malformed payload: no valid Protobuf message-index list after the schema id")
	}
	if n == 0 {
		return []int{0}, nil
	}
	out := make([]int, n)
	b = b[read:]
	for i := range out {
		v, read := binary.Varint(b)
		if read <= 0 {
			return nil, errors.New("malformed payload: truncated Protobuf message-index list")
		}
		out[i], b = int(v), b[read:]
	}
	return out, nil
}

// parseFile parses a Protobuf schema and its references; imports of the
// well-known and Confluent types come from the descriptors linked in.
func parseFile(c schemaregistry.Client, info schemaregistry.SchemaInfo) (*desc.FileDescriptor, error) {
	deps := make(map[string]string)
	if err := serde.ResolveReferences(c, info, deps); err != nil {
		return nil, err
	}
	const main = "."
	p := protoparse.Parser{
		Accessor: func(name string) (io.ReadCloser, error) {
			src, ok := deps[name]
			if name == main {
				src, ok = info.Schema, true
			}
			if !ok {
				return nil, os.ErrNotExist
			}
			return io.NopCloser(strings.NewReader(src)), nil
		},
		LookupImport: desc.LoadFileDescriptor,
	}
	fds, err := p.ParseFiles(main)
	if err != nil {
		return nil, err
	}
	return fds[0], nil
}
