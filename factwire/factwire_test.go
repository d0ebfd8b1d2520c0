package factwire_test

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
	"github.com/lagscope/lagscope/synth"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus under testdata/fuzz/FuzzDecode")

// synthFacts resolves n requests of the synthetic CQRS stream into facts.
func synthFacts(tb testing.TB, n int) [][]analyzer.Fact {
	tb.Helper()
	r, err := analyzer.NewResolver(analyzer.DefaultConfig(), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	g := synth.New(synth.Config{TracesPerRequest: 20})
	var out [][]analyzer.Fact
	for range n {
		now := time.Now()
		td, _ := g.Next(now)
		facts := r.Resolve(nil, td, now)
		if len(facts) == 0 {
			tb.Fatal("synth request resolved to no facts")
		}
		out = append(out, facts)
	}
	return out
}

// everyField returns a fact with every field set to a distinct non-zero
// value, by reflection, so that a field added to analyzer.Fact is set too.
func everyField(tb testing.TB, seed int) analyzer.Fact {
	tb.Helper()
	var f analyzer.Fact
	v := reflect.ValueOf(&f).Elem()
	for i := range v.NumField() {
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.String:
			fv.SetString(fmt.Sprintf("%s-%d", v.Type().Field(i).Name, seed))
		case reflect.Int64:
			fv.SetInt(int64(1_700_000_000_000_000_000 + 1000*i + seed))
		case reflect.Uint8:
			fv.SetUint(uint64(analyzer.FactProject))
		case reflect.Float64: // Weight: an adjusted count
			fv.SetFloat(float64(i+seed) + 4.0/3)
		case reflect.Uint64:
			fv.SetUint(0xa5a5_0000_0000_0000 + uint64(1000*i+seed))
		case reflect.Array:
			for j := range fv.Len() {
				fv.Index(j).SetUint(uint64(i*31 + j + seed))
			}
		default:
			tb.Fatalf("analyzer.Fact.%s is a %s, which this test cannot fill: teach factwire and this test", v.Type().Field(i).Name, fv.Kind())
		}
	}
	return f
}

// TestRoundTrip encodes and decodes batches and wants the facts back, field
// for field: facts of the synth stream, facts with every field set, and
// edge values.
func TestRoundTrip(t *testing.T) {
	// The fields the format carries (see the package doc); a new one
	// needs a new version.
	if got, want := reflect.TypeFor[analyzer.Fact]().NumField(), 18; got != want {
		t.Fatalf("analyzer.Fact has %d fields, factwire version %d carries %d: add the new ones to the format (and its version)", got, factwire.Version, want)
	}
	uuid := analyzer.KeyOf("0190a6d4-7b1c-7def-8abc-0123456789ab")
	tests := map[string][]analyzer.Fact{
		"empty":       nil,
		"every field": {everyField(t, 1), everyField(t, 2)},
		"synth":       synthFacts(t, 1)[0],
		"edges": {
			{Kind: analyzer.FactAppend, Event: uuid, EventID: "0190a6d4-7b1c-7def-8abc-0123456789ab", Start: math.MinInt64, End: math.MaxInt64, CommandStart: math.MaxInt64, Version: math.MinInt64},
			{Kind: analyzer.FactProject, Event: uuid, EventID: "0190A6D4-7B1C-7DEF-8ABC-0123456789AB", Start: math.MaxInt64, End: math.MinInt64, Version: math.MaxInt64},
			{Kind: analyzer.FactProject, Event: analyzer.KeyOf("order-7#3"), EventID: "order-7#3"},
			{Kind: analyzer.FactProject, Event: analyzer.EventKey{1, 2}},
			{Kind: analyzer.FactQuery, AggregateID: "order-7", Query: "GetOrder", Version: 3, Start: -5, End: -7},
		},
		"issue 13 kinds": {
			{Kind: analyzer.FactResolved, Event: uuid, TraceID: [16]byte{1}, SpanID: [8]byte{2}, Start: 1e18, End: 1e18 + 5},
			{Kind: analyzer.FactProjectSpan, Event: analyzer.KeyOfSpan([16]byte{1}, [8]byte{2}), Projection: "billing", EventType: "OrderPaid", TraceID: [16]byte{3}, SpanID: [8]byte{4}, Start: 1e18 + 9, End: 1e18 + 20, LinkedTraces: 0x11},
			{Kind: analyzer.FactLearned, EventType: "OrderPaid", Projection: "billing", Start: 1e18},
			{Kind: analyzer.FactLearned}, // a join instance asks the others for what they learned
		},
		"weights": {
			{Kind: analyzer.FactAppend, Event: uuid, EventID: "0190a6d4-7b1c-7def-8abc-0123456789ab", Weight: 2},
			{Kind: analyzer.FactProject, Event: uuid, Weight: 4.0 / 3},
			{Kind: analyzer.FactProject, Event: uuid},
			{Kind: analyzer.FactQuery, AggregateID: "order-7", Weight: 1 << 56},
			{Kind: analyzer.FactQuery, AggregateID: "order-7", Weight: 1},
		},
	}
	var enc factwire.Encoder
	for name, facts := range tests {
		t.Run(name, func(t *testing.T) {
			h := factwire.Header{Producer: 0xfeedface_01020304, Seq: 1<<63 + 5}
			b, err := enc.Append(nil, h, facts)
			if err != nil {
				t.Fatal(err)
			}
			gotH, got, err := factwire.Decode(nil, b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if gotH != h {
				t.Errorf("header = %+v, want %+v", gotH, h)
			}
			if diff := cmp.Diff(facts, got, cmp.Comparer(func(a, b []analyzer.Fact) bool { return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b) })); diff != "" {
				t.Errorf("facts differ after a round trip (-sent +decoded):\n%s", diff)
			}
		})
	}
}

// TestDecodeVersion1 reads a batch of version 1 (written before issue 14
// added Service and LinkedTraces): a join instance upgraded first must keep
// reading its ingest instances' batches.
func TestDecodeVersion1(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "version1.batch"))
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 1 {
		t.Fatalf("testdata/version1.batch has version %d, want 1", b[0])
	}
	_, facts, err := factwire.Decode(nil, b)
	if err != nil {
		t.Fatalf("Decode of a version 1 batch: %v", err)
	}
	if len(facts) != 6 {
		t.Fatalf("decoded %d facts, want 6", len(facts))
	}
	for i, f := range facts {
		if f.Kind == 0 || f.Service != "" || f.LinkedTraces != 0 {
			t.Errorf("fact %d: kind %v, service %q, linked traces %#x; want a kind and neither of the version 2 fields", i, f.Kind, f.Service, f.LinkedTraces)
		}
	}
}

func TestAppendRefusesParkedFacts(t *testing.T) {
	var enc factwire.Encoder
	if _, err := enc.Append(nil, factwire.Header{}, []analyzer.Fact{{Kind: 0}}); err == nil {
		t.Error("Append of a kind 0 fact succeeded, want an error")
	}
}

// TestAppendRefusesFullResolved: a resolved fact's layout carries its
// event, span and times only; anything else would not survive the wire.
func TestAppendRefusesFullResolved(t *testing.T) {
	var enc factwire.Encoder
	for _, f := range []analyzer.Fact{
		{Kind: analyzer.FactResolved, EventID: "e1"},
		{Kind: analyzer.FactResolved, Projection: "billing"},
		{Kind: analyzer.FactResolved, Weight: 2},
		{Kind: analyzer.FactResolved, LinkedTraces: 1},
	} {
		if _, err := enc.Append(nil, factwire.Header{}, []analyzer.Fact{f}); err == nil {
			t.Errorf("Append of resolved fact %+v succeeded, want an error", f)
		}
	}
}

// TestAppendRefusesBadWeights: a weight is an adjusted count, 1 to 2^56.
func TestAppendRefusesBadWeights(t *testing.T) {
	var enc factwire.Encoder
	for _, w := range []float64{0.5, -1, math.NaN(), math.Inf(1), 1<<56 + 1<<8} {
		if _, err := enc.Append(nil, factwire.Header{}, []analyzer.Fact{{Kind: analyzer.FactQuery, Weight: w}}); err == nil {
			t.Errorf("Append of weight %v succeeded, want an error", w)
		}
	}
}

// TestDecodeRejects checks that malformed batches are errors of the right
// kind, and that every truncation of a valid batch is one.
func TestDecodeRejects(t *testing.T) {
	var enc factwire.Encoder
	valid, err := enc.Append(nil, factwire.Header{Producer: 1, Seq: 2}, synthFacts(t, 1)[0][:4])
	if err != nil {
		t.Fatal(err)
	}
	weighted, err := enc.Append(nil, factwire.Header{Producer: 1, Seq: 2}, []analyzer.Fact{{Kind: analyzer.FactQuery, Weight: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if weighted[0] != factwire.Version {
		t.Fatalf("weighted batch has version %d, want %d", weighted[0], factwire.Version)
	}
	learned, err := enc.Append(nil, factwire.Header{Producer: 1, Seq: 2}, []analyzer.Fact{{Kind: analyzer.FactLearned, EventType: "OrderPaid", Projection: "billing"}})
	if err != nil {
		t.Fatal(err)
	}
	// The first fact's kind byte follows the header, the dictionary
	// (count, then each string) and the count of facts.
	kindAt := 1 + 8 + 1 + 1 + len("OrderPaid") + 1 + len("billing") + 1 + 1
	if learned[kindAt] != byte(analyzer.FactLearned) {
		t.Fatalf("byte %d of the learned batch is %d, want its kind %d", kindAt, learned[kindAt], analyzer.FactLearned)
	}
	withKind := func(v byte, k analyzer.FactKind) []byte {
		b := append([]byte{v}, learned[1:]...)
		b[kindAt] = byte(k)
		return b
	}
	// The weight is the 8 bytes before the fact's last, its LinkedTraces
	// (0, one byte).
	badWeight := func(w float64) []byte {
		b := append([]byte(nil), weighted...)
		binary.BigEndian.PutUint64(b[len(b)-9:len(b)-1], math.Float64bits(w))
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, factwire.ErrMalformed},
		{"version 4", append([]byte{4}, valid[1:]...), factwire.ErrVersion},
		// A reader of version 2 never applies a kind it does not know.
		{"learned in version 2", withKind(2, analyzer.FactLearned), factwire.ErrMalformed},
		{"resolved in version 2", withKind(2, analyzer.FactResolved), factwire.ErrMalformed},
		{"project_span in version 1", withKind(1, analyzer.FactProjectSpan), factwire.ErrMalformed},
		{"kind 7", withKind(3, analyzer.FactLearned+1), factwire.ErrMalformed},
		{"resolved with other flags", func() []byte {
			b, err := enc.Append(nil, factwire.Header{Producer: 1, Seq: 2}, []analyzer.Fact{{Kind: analyzer.FactResolved, Event: analyzer.EventKey{1}}})
			if err != nil {
				t.Fatal(err)
			}
			b[1+8+1+1+1+1] = 0x01 // after header, dictionary and count: the flags
			return b
		}(), factwire.ErrMalformed},
		{"weight flag in version 1", append([]byte{1}, weighted[1:]...), factwire.ErrMalformed},
		{"weight below 1", badWeight(0.5), factwire.ErrMalformed},
		{"weight NaN", badWeight(math.NaN()), factwire.ErrMalformed},
		{"weight past 2^56", badWeight(math.Inf(1)), factwire.ErrMalformed},
		{"trailing byte", append(append([]byte(nil), valid...), 0), factwire.ErrMalformed},
		{"huge dictionary count", append(append([]byte{1}, make([]byte, 9)...), 0xff, 0xff, 0xff, 0xff, 0x0f), factwire.ErrMalformed},
		{"kind 0", append(append([]byte{1}, make([]byte, 9)...), 0, 1, 0, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), factwire.ErrMalformed},
	}
	for i := 1; i < len(valid); i++ {
		tests = append(tests, struct {
			name string
			b    []byte
			want error
		}{"truncated to " + strconv.Itoa(i), valid[:i], factwire.ErrMalformed})
	}
	for i := 1; i < len(weighted); i++ {
		tests = append(tests, struct {
			name string
			b    []byte
			want error
		}{"weighted truncated to " + strconv.Itoa(i), weighted[:i], factwire.ErrMalformed})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got, err := factwire.Decode(nil, tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode error = %v, want %v", err, tt.want)
			}
			if len(got) != 0 {
				t.Errorf("Decode returned %d facts with its error, want none", len(got))
			}
		})
	}
}

// FuzzDecode checks that Decode never panics, and that what it accepts
// encodes to a batch that decodes to the same facts.
func FuzzDecode(f *testing.F) {
	var enc factwire.Encoder
	for _, facts := range synthFacts(f, 2) {
		b, err := enc.Append(nil, factwire.Header{Producer: 7, Seq: 9}, facts[:min(3, len(facts))])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, facts, err := factwire.Decode(nil, b)
		if err != nil {
			if !errors.Is(err, factwire.ErrMalformed) && !errors.Is(err, factwire.ErrVersion) {
				t.Fatalf("Decode error %v is neither ErrMalformed nor ErrVersion", err)
			}
			return
		}
		again, err := enc.Append(nil, h, facts)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		_, got, err := factwire.Decode(nil, again)
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if diff := cmp.Diff(facts, got); diff != "" {
			t.Fatalf("re-encoded facts differ (-first +second):\n%s", diff)
		}
	})
}

// TestSeedCorpus writes (with -update) and checks the seed corpus of
// FuzzDecode: valid batches, and malformed ones.
func TestSeedCorpus(t *testing.T) {
	var enc factwire.Encoder
	facts := synthFacts(t, 1)[0]
	valid, err := enc.Append(nil, factwire.Header{Producer: 3, Seq: 4}, facts[:6])
	if err != nil {
		t.Fatal(err)
	}
	every, err := enc.Append(nil, factwire.Header{Producer: 5, Seq: 6}, []analyzer.Fact{everyField(t, 1), everyField(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	kinds, err := enc.Append(nil, factwire.Header{Producer: 7, Seq: 8}, []analyzer.Fact{
		{Kind: analyzer.FactResolved, Event: facts[0].Event, TraceID: facts[0].TraceID, SpanID: facts[0].SpanID, Start: facts[0].Start, End: facts[0].End},
		{Kind: analyzer.FactProjectSpan, Event: analyzer.KeyOfSpan(facts[0].TraceID, facts[0].SpanID), Projection: "billing", TraceID: [16]byte{9}, SpanID: [8]byte{9}, Start: facts[0].Start, End: facts[0].End},
		{Kind: analyzer.FactLearned, EventType: "OrderPaid", Projection: "billing", Start: facts[0].Start},
		{Kind: analyzer.FactLearned},
	})
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{
		"valid":       valid,
		"every_field": every,
		"new_kinds":   kinds,
		"truncated":   valid[:len(valid)/2],
		"version_0":   append([]byte{0}, valid[1:]...),
		"bad_flags":   append(append([]byte{1}, make([]byte, 9)...), 0, 1, 1, 0xff),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *update {
		for name, b := range seeds {
			content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each seed decodes, or not, as its name says.
	for name := range seeds {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%v (run go test -update)", err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a fuzz corpus file", name)
		}
		b, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, _, err = factwire.Decode(nil, []byte(b))
		if got, want := err == nil, name == "valid" || name == "every_field" || name == "new_kinds"; got != want {
			t.Errorf("seed %s: Decode error %v, want success %t", name, err, want)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	batches := synthFacts(b, 8)
	var enc factwire.Encoder
	var buf []byte
	facts, bytes := 0, 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		fs := batches[i%len(batches)]
		var err error
		if buf, err = enc.Append(buf[:0], factwire.Header{Producer: 1, Seq: uint64(i)}, fs); err != nil {
			b.Fatal(err)
		}
		facts += len(fs)
		bytes += len(buf)
	}
	b.ReportMetric(float64(facts)/b.Elapsed().Seconds(), "facts/s")
	b.ReportMetric(float64(bytes)/float64(facts), "bytes/fact")
}

func BenchmarkDecode(b *testing.B) {
	var enc factwire.Encoder
	var encoded [][]byte
	for _, fs := range synthFacts(b, 8) {
		buf, err := enc.Append(nil, factwire.Header{Producer: 1}, fs)
		if err != nil {
			b.Fatal(err)
		}
		encoded = append(encoded, buf)
	}
	// Decode, and a Decoder as the join role uses (one allocation fewer
	// per batch: its dictionary).
	var dec factwire.Decoder
	for name, decode := range map[string]func([]analyzer.Fact, []byte) (factwire.Header, []analyzer.Fact, error){
		"func": factwire.Decode, "Decoder": dec.Decode,
	} {
		b.Run(name, func(b *testing.B) {
			var facts []analyzer.Fact
			n := 0
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				var err error
				if _, facts, err = decode(facts[:0], encoded[i%len(encoded)]); err != nil {
					b.Fatal(err)
				}
				n += len(facts)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "facts/s")
		})
	}
}
