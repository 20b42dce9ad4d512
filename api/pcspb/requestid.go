package pcspb

import (
	"context"
	"errors"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// ErrBadRequestID: the request-id header does not hold a RequestID with a client and a seq.
var ErrBadRequestID = errors.New("malformed " + RequestIDHeader + " header")

// WithRequestID returns ctx with id in the outgoing metadata of a call.
func WithRequestID(ctx context.Context, id *RequestID) context.Context {
	b, _ := proto.Marshal(id)
	return metadata.AppendToOutgoingContext(ctx, RequestIDHeader, string(b))
}

// RequestIDFrom returns the request id a caller sent with an incoming call (nil if none).
func RequestIDFrom(ctx context.Context) (*RequestID, error) {
	vals := metadata.ValueFromIncomingContext(ctx, RequestIDHeader)
	if len(vals) == 0 {
		return nil, nil
	}
	id := &RequestID{}
	if err := proto.Unmarshal([]byte(vals[0]), id); err != nil || id.ClientId == 0 || id.Seq == 0 {
		return nil, ErrBadRequestID
	}
	return id, nil
}
