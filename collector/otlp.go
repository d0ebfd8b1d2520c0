package collector

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// What a client needs to send this receiver OTLP requests it has encoded
// already (lagscope loadgen, the end-to-end benchmarks): the receiver's own
// names and codec, so that client and server cannot drift apart.
const (
	// TracesGRPCMethod is the full gRPC method of OTLP trace export that the
	// OTLP/gRPC receiver serves.
	TracesGRPCMethod = traceExportPath
	// TracesHTTPPath is the path of OTLP trace export that the OTLP/HTTP
	// receiver serves.
	TracesHTTPPath = tracesPath
)

// ClientCodec returns the receiver's gRPC codec for a client: a *[]byte
// request is sent as the encoded message it holds, a *[]byte response
// receives the encoded message (reusing its capacity), and every other
// message goes through gRPC's proto codec. Use it with grpc.ForceCodecV2.
// It is safe for concurrent use.
func ClientCodec() encoding.CodecV2 { return clientCodec{raw: newRawCodec()} }

// clientCodec carries a client's *[]byte through rawCodec as a rawMessage.
type clientCodec struct {
	raw rawCodec
}

func (c clientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(*[]byte); ok {
		return c.raw.Marshal(&rawMessage{b: *b})
	}
	return c.raw.Marshal(v)
}

func (c clientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*[]byte); ok {
		m := rawMessage{b: *b}
		err := c.raw.Unmarshal(data, &m)
		*b = m.b
		return err
	}
	return c.raw.Unmarshal(data, v)
}

func (c clientCodec) Name() string { return c.raw.Name() }
