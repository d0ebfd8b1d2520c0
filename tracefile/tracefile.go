// Package tracefile reads files of OTLP trace requests, as the OpenTelemetry
// Collector's file exporter writes them and as people save them:
//
//   - OTLP JSON, one ExportTraceServiceRequest / TracesData per line (the file
//     exporter's format: json), or whole, possibly indented, documents one
//     after another;
//   - length-delimited protobuf (format: proto): each TracesData preceded by
//     its length as a 4-byte big-endian integer;
//   - either compressed with gzip or zstd as a whole (.gz, .zst, or the file
//     exporter's native compression), or, with the file exporter's legacy
//     `compression: zstd`, each length-delimited message compressed on its
//     own.
//
// The format is recognised from the content, not the file name. A Reader
// names the place of every problem ("line 3", "message 7"), never the JSON
// library's internals; JSON that is not OTLP (Jaeger's or Zipkin's, or any
// other) is an error rather than zero spans; a last line cut short (a file
// still being written) is reported as ErrTruncated and the Reader ends.
package tracefile

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// MaxMessageBytes bounds one document or message: the largest OTLP request
// lagscope accepts (16 MiB) with room for JSON's verbosity.
const MaxMessageBytes = 64 << 20

// ErrTruncated is the error of a last document cut short: the file ends in the
// middle of it. Nothing follows it.
var ErrTruncated = errors.New("the file ends in the middle of a document (still being written?); it is skipped")

// Error is a problem at one place of a file.
type Error struct {
	// Where is the place: "line N" for JSON, "message N" for protobuf.
	Where string
	Err   error
}

func (e *Error) Error() string { return e.Where + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Reader reads the trace requests of one file, in order. It is not safe for
// concurrent use.
type Reader struct {
	br     *bufio.Reader
	closer []io.Closer
	format string
	next   func() (ptrace.Traces, error)
	done   bool

	line int // JSON: line of the next document
	msg  int // protobuf: number of the next message
	zdec *zstd.Decoder
	json ptrace.JSONUnmarshaler
	pb   ptrace.ProtoUnmarshaler
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Open opens the file name ("-" is standard input) and recognises its format.
func Open(name string) (*Reader, error) {
	if name == "-" {
		return NewReader(os.Stdin)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open trace file: %w", err)
	}
	r, err := NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = append(r.closer, f)
	return r, nil
}

// NewReader reads trace requests from r, recognising its format from the
// first bytes.
func NewReader(r io.Reader) (*Reader, error) {
	t := &Reader{line: 1, msg: 1}
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read gzip: %w", err)
		}
		t.closer = append(t.closer, zr)
		br = bufio.NewReaderSize(zr, 1<<20)
		t.format = "gzip, "
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxMemory(MaxMessageBytes*4))
		if err != nil {
			return nil, fmt.Errorf("read zstd: %w", err)
		}
		t.closer = append(t.closer, zr.IOReadCloser())
		br = bufio.NewReaderSize(zr, 1<<20)
		t.format = "zstd, "
	}
	t.br = br
	first, err := t.firstByte()
	switch {
	case errors.Is(err, io.EOF):
		t.format += "empty"
		t.next = func() (ptrace.Traces, error) { return ptrace.Traces{}, io.EOF }
	case err != nil:
		return nil, fmt.Errorf("read trace file: %w", err)
	case first == '{' || first == '[':
		t.format += "OTLP JSON"
		t.next = t.nextJSON
	default:
		t.format += "length-delimited OTLP protobuf"
		t.next = t.nextProto
	}
	return t, nil
}

// firstByte returns the first byte that is not JSON white space, without
// consuming it; white space it skips is counted in lines.
func (t *Reader) firstByte() (byte, error) {
	for {
		b, err := t.br.Peek(1)
		if err != nil {
			return 0, err
		}
		switch b[0] {
		case ' ', '\t', '\r':
		case '\n':
			t.line++
		default:
			return b[0], nil
		}
		_, _ = t.br.Discard(1)
	}
}

// Format describes what the Reader recognised, e.g. "zstd, OTLP JSON".
func (t *Reader) Format() string { return t.format }

// Next returns the next trace request. At the end it returns io.EOF; after a
// truncated last document, an *Error wrapping ErrTruncated, then io.EOF.
// Other errors are *Error naming the place; reading may go on after them.
func (t *Reader) Next() (ptrace.Traces, error) {
	if t.done {
		return ptrace.Traces{}, io.EOF
	}
	td, err := t.next()
	if errors.Is(err, io.EOF) || errors.Is(err, ErrTruncated) {
		t.done = true
	}
	return td, err
}

// Close closes what Open opened.
func (t *Reader) Close() error {
	var errs []error
	for i := len(t.closer) - 1; i >= 0; i-- {
		errs = append(errs, t.closer[i].Close())
	}
	if t.zdec != nil {
		t.zdec.Close()
	}
	return errors.Join(errs...)
}

// nextJSON reads the next JSON document: one line, or as many lines as an
// indented document spans. A scanner follows the nesting as lines arrive, so
// that a document is parsed once, whatever its number of lines.
func (t *Reader) nextJSON() (ptrace.Traces, error) {
	if _, err := t.firstByte(); err != nil {
		return ptrace.Traces{}, io.EOF
	}
	where := fmt.Sprintf("line %d", t.line)
	var doc []byte
	var sc nesting
	for {
		line, err := t.br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			doc = append(doc, line...)
			if len(doc) > MaxMessageBytes {
				t.done = true // no line boundary to go on from
				return ptrace.Traces{}, &Error{Where: where, Err: fmt.Errorf("a document longer than %d bytes", MaxMessageBytes)}
			}
			line, err = t.br.ReadSlice('\n')
		}
		from := len(doc)
		doc = append(doc, line...)
		if len(line) > 0 && line[len(line)-1] == '\n' {
			t.line++
		}
		if sc.feed(doc[from:]) {
			if json.Valid(doc) {
				return t.decodeJSON(doc, where)
			}
			return ptrace.Traces{}, &Error{Where: where, Err: errors.New(syntaxProblem(doc))}
		}
		if err != nil { // the end of the file, inside a document
			if len(bytes.TrimSpace(doc)) == 0 {
				return ptrace.Traces{}, io.EOF
			}
			return ptrace.Traces{}, &Error{Where: where, Err: ErrTruncated}
		}
		if len(doc) > MaxMessageBytes {
			t.done = true
			return ptrace.Traces{}, &Error{Where: where, Err: fmt.Errorf("a document longer than %d bytes", MaxMessageBytes)}
		}
	}
}

// nesting follows the brackets of a JSON text outside its strings.
type nesting struct {
	depth         int
	started       bool
	inString, esc bool
}

// feed reads b and reports whether a whole top-level value has been read:
// its brackets closed (or, for a bare scalar, its line ended).
func (n *nesting) feed(b []byte) bool {
	for _, c := range b {
		switch {
		case n.inString:
			switch {
			case n.esc:
				n.esc = false
			case c == '\\':
				n.esc = true
			case c == '"':
				n.inString = false
			}
		case c == '"':
			n.inString, n.started = true, true
		case c == '{' || c == '[':
			n.depth++
			n.started = true
		case c == '}' || c == ']':
			n.depth--
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		default:
			n.started = true
		}
	}
	if !n.started || n.inString {
		return false
	}
	return n.depth <= 0
}

// syntaxProblem says, in words, why b is not JSON; "" if it is.
func syntaxProblem(b []byte) string {
	var v any
	err := json.Unmarshal(b, &v)
	var se *json.SyntaxError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &se) && se.Error() == "unexpected end of JSON input":
		return "unexpected end of JSON"
	case errors.As(err, &se):
		return fmt.Sprintf("not JSON: %s at byte %d", strings.TrimPrefix(se.Error(), "invalid character "), se.Offset)
	}
	return "not JSON"
}

func (t *Reader) decodeJSON(doc []byte, where string) (ptrace.Traces, error) {
	trimmed := bytes.TrimSpace(doc)
	if !bytes.Contains(trimmed, []byte(`"resourceSpans"`)) && !bytes.Contains(trimmed, []byte(`"resource_spans"`)) {
		return ptrace.Traces{}, &Error{Where: where, Err: errors.New(notOTLP(trimmed))}
	}
	td, err := t.json.UnmarshalTraces(trimmed)
	if err != nil {
		return ptrace.Traces{}, &Error{Where: where, Err: otlpProblem(err)}
	}
	return td, nil
}

// notOTLP says what a JSON document without resourceSpans looks like.
func notOTLP(doc []byte) string {
	switch {
	case len(doc) > 0 && doc[0] == '[' && bytes.Contains(doc, []byte(`"traceId"`)):
		return "not OTLP JSON: a list of spans with traceId, as Zipkin v2 JSON writes; lagscope reads OTLP JSON (resourceSpans)"
	case bytes.Contains(doc, []byte(`"traceID"`)) && bytes.Contains(doc, []byte(`"spans"`)):
		return "not OTLP JSON: traces with traceID and spans, as Jaeger's JSON writes; lagscope reads OTLP JSON (resourceSpans)"
	case len(doc) > 0 && doc[0] == '[':
		return "not OTLP JSON: a list; lagscope reads OTLP JSON objects (resourceSpans)"
	}
	return "not OTLP JSON: no resourceSpans"
}

// otlpProblem turns pdata's JSON error (jsoniter's wording) into what was
// wrong and where, without the library's internals.
func otlpProblem(err error) error {
	msg := err.Error()
	what := "a field has a value of the wrong type"
	switch {
	case strings.Contains(msg, "ID.UnmarshalJSONIter") || strings.Contains(msg, "length mismatch"):
		what = "a trace or span id is not hexadecimal of the right length (32 and 16 digits)"
	case strings.Contains(msg, "ReadString"):
		what = "a string field holds something else"
	case strings.Contains(msg, "ReadInt") || strings.Contains(msg, "ReadUint") || strings.Contains(msg, "ReadFloat"):
		what = "a number field holds something else"
	case strings.Contains(msg, "ReadArray"):
		what = "a list field holds something else"
	case strings.Contains(msg, "ReadObject"):
		what = "an object field holds something else"
	}
	if _, ctx, ok := strings.Cut(msg, "bigger context ...|"); ok {
		ctx, _, _ = strings.Cut(ctx, "|...")
		return fmt.Errorf("not OTLP JSON: %s, near %q", what, ctx)
	}
	return errors.New("not OTLP JSON: " + what)
}

// nextProto reads the next length-delimited protobuf message.
func (t *Reader) nextProto() (ptrace.Traces, error) {
	where := fmt.Sprintf("message %d", t.msg)
	var size [4]byte
	n, err := io.ReadFull(t.br, size[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return ptrace.Traces{}, io.EOF
	case err != nil:
		return ptrace.Traces{}, &Error{Where: where, Err: ErrTruncated}
	}
	length := binary.BigEndian.Uint32(size[:])
	if length > MaxMessageBytes {
		// Not a length: the file is not length-delimited protobuf, or is
		// broken here; nothing after it can be framed.
		t.done = true
		return ptrace.Traces{}, &Error{Where: where, Err: fmt.Errorf("not length-delimited OTLP protobuf: a length of %d bytes", length)}
	}
	buf := make([]byte, length)
	if _, err := io.ReadFull(t.br, buf); err != nil {
		return ptrace.Traces{}, &Error{Where: where, Err: ErrTruncated}
	}
	t.msg++
	if bytes.HasPrefix(buf, zstdMagic) {
		// The file exporter's legacy compression: each message on its own.
		if t.zdec == nil {
			if t.zdec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxMessageBytes)); err != nil {
				return ptrace.Traces{}, &Error{Where: where, Err: fmt.Errorf("zstd: %w", err)}
			}
		}
		if buf, err = t.zdec.DecodeAll(buf, nil); err != nil {
			return ptrace.Traces{}, &Error{Where: where, Err: fmt.Errorf("not zstd: %w", err)}
		}
	}
	if trimmed := bytes.TrimSpace(buf); len(trimmed) > 0 && trimmed[0] == '{' {
		return t.decodeJSON(trimmed, where) // legacy compressed JSON is framed too
	}
	td, err := t.pb.UnmarshalTraces(buf)
	if err != nil {
		return ptrace.Traces{}, &Error{Where: where, Err: errors.New("not OTLP protobuf (TracesData)")}
	}
	return td, nil
}
