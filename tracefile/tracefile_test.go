package tracefile

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// fixture returns the requests of testdata/happy_path.jsonl, the spans they
// hold, and its lines.
func fixture(t *testing.T) ([]ptrace.Traces, int, [][]byte) {
	t.Helper()
	b, err := os.ReadFile("../testdata/happy_path.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var reqs []ptrace.Traces
	spans := 0
	var lines [][]byte
	var u ptrace.JSONUnmarshaler
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		td, err := u.UnmarshalTraces(l)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, td)
		spans += td.SpanCount()
		lines = append(lines, l)
	}
	return reqs, spans, lines
}

func delimited(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
		out = append(out, m...)
	}
	return out
}

func zstdAll(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func gzipAll(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readAll reads every request of b, keeping the errors in order.
func readAll(t *testing.T, b []byte) (format string, spans int, errs []error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	for range 1000 {
		td, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Format(), spans, errs
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		spans += td.SpanCount()
	}
	t.Fatal("no end after 1000 documents")
	return
}

func TestReaderFormats(t *testing.T) {
	reqs, spans, lines := fixture(t)
	jsonl := append(bytes.Join(lines, []byte("\n")), '\n')
	var protos, zstdProtos, zstdJSONs [][]byte
	for i, td := range reqs {
		pb, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		protos = append(protos, pb)
		zstdProtos = append(zstdProtos, zstdAll(t, pb))
		zstdJSONs = append(zstdJSONs, zstdAll(t, lines[i]))
	}
	var indented bytes.Buffer
	for _, l := range lines {
		if err := json.Indent(&indented, l, "", "  "); err != nil {
			t.Fatal(err)
		}
		indented.WriteString("\n\n")
	}
	tests := []struct {
		name, format string
		in           []byte
	}{
		{"JSON lines", "OTLP JSON", jsonl},
		{"JSON lines without the last newline", "OTLP JSON", bytes.TrimSpace(jsonl)},
		{"CRLF JSON lines", "OTLP JSON", bytes.ReplaceAll(jsonl, []byte("\n"), []byte("\r\n"))},
		{"indented documents", "OTLP JSON", indented.Bytes()},
		{"gzip JSON lines", "gzip, OTLP JSON", gzipAll(t, jsonl)},
		{"zstd JSON lines (native compression)", "zstd, OTLP JSON", zstdAll(t, jsonl)},
		{"length-delimited protobuf", "length-delimited OTLP protobuf", delimited(protos...)},
		{"zstd length-delimited protobuf (native compression)", "zstd, length-delimited OTLP protobuf", zstdAll(t, delimited(protos...))},
		{"length-delimited protobuf, each message zstd (legacy compression)", "length-delimited OTLP protobuf", delimited(zstdProtos...)},
		{"length-delimited JSON, each message zstd (legacy compression)", "length-delimited OTLP protobuf", delimited(zstdJSONs...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			format, got, errs := readAll(t, tt.in)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if format != tt.format {
				t.Errorf("format %q, want %q", format, tt.format)
			}
			if got != spans {
				t.Errorf("read %d spans, want %d", got, spans)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	_, spans, lines := fixture(t)
	good := string(lines[0])
	goodSpans := strings.Count(good, `"spanId"`)
	_ = spans
	tests := []struct {
		name      string
		in        string
		wantSpans int
		want      []string // the errors, in order
		truncated bool     // the last error is ErrTruncated
	}{
		{name: "not OTLP", in: `{"foo":1}` + "\n", want: []string{"line 1: not OTLP JSON: no resourceSpans"}},
		{name: "Zipkin v2 JSON", in: `[{"traceId":"abc","id":"def","name":"x"}]`, want: []string{"line 1: not OTLP JSON: a list of spans with traceId, as Zipkin v2 JSON writes"}},
		{name: "Jaeger JSON", in: `{"data":[{"traceID":"abc","spans":[]}]}`, want: []string{"line 1: not OTLP JSON: traces with traceID and spans, as Jaeger's JSON writes"}},
		{name: "bad trace id on line 2", in: good + "\n" + `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}` + "\n" + good + "\n",
			wantSpans: 2 * goodSpans, want: []string{`line 2: not OTLP JSON: a trace or span id is not hexadecimal of the right length (32 and 16 digits), near`}},
		{name: "a line that is not JSON, then more", in: good + "\nhello\n" + good + "\n", wantSpans: 2 * goodSpans,
			want: []string{"line 2: not JSON: 'h' looking for beginning of value at byte 1"}},
		{name: "truncated last line", in: good + "\n" + good[:len(good)/2], wantSpans: goodSpans,
			want: []string{"line 2: " + ErrTruncated.Error()}, truncated: true},
		{name: "truncated protobuf", in: string(delimited([]byte("x"))[:3]), want: []string{"message 1: " + ErrTruncated.Error()}, truncated: true},
		{name: "binary that is not length-delimited", in: "\x7f\xff\xff\xffabc", want: []string{"message 1: not length-delimited OTLP protobuf: a length of 2147483647 bytes"}},
		{name: "blank lines count", in: "\n\n" + `{"foo":1}`, want: []string{"line 3: not OTLP JSON"}},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, gotSpans, errs := readAll(t, []byte(tt.in))
			if gotSpans != tt.wantSpans {
				t.Errorf("read %d spans, want %d", gotSpans, tt.wantSpans)
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("errors %v, want %d", errs, len(tt.want))
			}
			for i, err := range errs {
				if !strings.HasPrefix(err.Error(), tt.want[i]) {
					t.Errorf("error %d:\n got %q\nwant %q...", i, err, tt.want[i])
				}
				for _, internal := range []string{"ReadObject", "jsoniter", "UnmarshalJSONIter", "bigger context", "error found in"} {
					if strings.Contains(err.Error(), internal) {
						t.Errorf("error %d leaks %q: %v", i, internal, err)
					}
				}
			}
			if tt.truncated && !errors.Is(errs[len(errs)-1], ErrTruncated) {
				t.Errorf("last error %v is not ErrTruncated", errs[len(errs)-1])
			}
		})
	}
}

// FuzzReader reads arbitrary files: never a panic, never a loop.
func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"resourceSpans":[]}` + "\n{\n"))
	f.Add(delimited([]byte{0x0a, 0x00}))
	f.Add([]byte("[\"\\\"{\"]\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		defer r.Close()
		for range len(b) + 2 {
			if _, err := r.Next(); errors.Is(err, io.EOF) {
				return
			}
		}
		t.Fatalf("more documents than bytes in %q", b)
	})
}
