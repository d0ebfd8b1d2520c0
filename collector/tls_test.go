package collector

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lagscope/lagscope/internal/testpki"
)

// testReloadInterval is how often the receivers of these tests look at
// their files, so that rotations are seen at once.
const testReloadInterval = 10 * time.Millisecond

// testCA and leaf are testpki's, under the names these tests use.
type (
	testCA = testpki.CA
	leaf   = testpki.Leaf
)

func newTestCA(t testing.TB, name string) *testCA { return testpki.NewCA(t, name) }

// writeFile replaces path with b by a rename, as a rotation should, so that
// a reader never sees half a file.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// pki is the files of a receiver's TLS: a server certificate of serverCA and
// a client CA file.
type pki struct {
	serverCA *testCA
	cfg      TLSConfig
}

func newPKI(t testing.TB, clientCA *testCA) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{serverCA: newTestCA(t, "server CA"), cfg: TLSConfig{
		CertFile: filepath.Join(dir, "server.crt"),
		KeyFile:  filepath.Join(dir, "server.key"),
	}}
	p.rotateServer(t, p.serverCA.Valid(t, 100, false))
	if clientCA != nil {
		p.cfg.ClientCAFile = filepath.Join(dir, "client-ca.crt")
		writeFile(t, p.cfg.ClientCAFile, clientCA.PEM)
	}
	return p
}

// rotateServer writes a new server certificate, the key first: the receiver
// keeps the old pair while the two do not match.
func (p *pki) rotateServer(t testing.TB, l leaf) {
	t.Helper()
	writeFile(t, p.cfg.KeyFile, l.KeyPEM)
	writeFile(t, p.cfg.CertFile, l.CertPEM)
}

// clientTLS trusts the server CA and presents cert, if any.
func (p *pki) clientTLS(cert *leaf) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(p.serverCA.Cert)
	c := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{cert.TLS}
	}
	return c
}

// startSecureReceiver starts a receiver on loopback that looks at its files
// every testReloadInterval, shut down when the test ends.
func startSecureReceiver(t testing.TB, cfg Config, next Consumer) *Receiver {
	t.Helper()
	r, err := newReceiver(cfg, next, nil, nil, testReloadInterval)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return r
}

func writeToken(t testing.TB, path, token string) {
	t.Helper()
	writeFile(t, path, []byte(token))
}

// sdkSpans are two spans as the SDK hands them to its exporter.
func sdkSpans() []sdktrace.ReadOnlySpan {
	res := resource.NewSchemaless(attribute.String("service.name", "checkout"))
	scope := instrumentation.Scope{Name: "orders"}
	tid := trace.TraceID{1, 2, 3}
	return tracetest.SpanStubs{
		{Name: "place-order", Resource: res, InstrumentationScope: scope,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1}}),
			Attributes:  []attribute.KeyValue{attribute.String("order.id", "o-42"), attribute.Int64("order.items", 3)}},
		{Name: "reserve-stock", Resource: res, InstrumentationScope: scope,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{2}}),
			Parent:      trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1}}),
			Attributes:  []attribute.KeyValue{attribute.Bool("stock.partial", true)}},
	}.Snapshots()
}

// sdkExport sends sdkSpans with the real OTel exporter of transport tr, over
// TLS with tlsCfg and with headers, retries off, and returns its error.
func sdkExport(t *testing.T, r *Receiver, tr transport, tlsCfg *tls.Config, headers map[string]string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var exp sdktrace.SpanExporter
	var err error
	switch tr {
	case transportGRPC:
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(r.GRPCAddr().String()),
			otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)),
			otlptracegrpc.WithHeaders(headers),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	case transportHTTP:
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(r.HTTPAddr().String()),
			otlptracehttp.WithTLSClientConfig(tlsCfg),
			otlptracehttp.WithHeaders(headers),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	}
	if err != nil {
		t.Fatalf("new exporter: %v", err)
	}
	exportErr := exp.ExportSpans(ctx, sdkSpans())
	if err := exp.Shutdown(ctx); err != nil {
		t.Errorf("shut down exporter: %v", err)
	}
	return exportErr
}

func TestSDKExportersOverTLS(t *testing.T) {
	clientCA := newTestCA(t, "client CA")
	otherCA := newTestCA(t, "other CA")
	goodClient := clientCA.Valid(t, 200, true)
	expired := clientCA.Issue(t, 201, true, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	unknown := otherCA.Valid(t, 202, true)
	const token = "s3cret-token"
	bearer := map[string]string{"Authorization": "Bearer " + token}

	tests := []struct {
		name     string
		mtls     bool // the receiver asks for client certificates
		token    bool // the receiver asks for the bearer token
		cert     *leaf
		headers  map[string]string
		wantOK   bool
		wantCode codes.Code // over gRPC, when not OK and known
		// wantUnauthenticated is whether the request reached the receiver
		// and was counted as unauthenticated (not refused at the handshake).
		wantUnauthenticated bool
	}{
		{name: "TLS", wantOK: true},
		{name: "TLS token", token: true, headers: bearer, wantOK: true},
		{name: "TLS no token", token: true, wantCode: codes.Unauthenticated, wantUnauthenticated: true},
		{name: "TLS wrong token", token: true, headers: map[string]string{"Authorization": "Bearer " + token + "x"},
			wantCode: codes.Unauthenticated, wantUnauthenticated: true},
		{name: "TLS basic instead of bearer", token: true, headers: map[string]string{"Authorization": "Basic " + token},
			wantCode: codes.Unauthenticated, wantUnauthenticated: true},
		{name: "mTLS", mtls: true, cert: &goodClient, wantOK: true},
		{name: "mTLS token", mtls: true, token: true, cert: &goodClient, headers: bearer, wantOK: true},
		{name: "mTLS cert no token", mtls: true, token: true, cert: &goodClient,
			wantCode: codes.Unauthenticated, wantUnauthenticated: true},
		{name: "mTLS token no cert", mtls: true, token: true, headers: bearer},
		{name: "mTLS expired cert", mtls: true, token: true, cert: &expired, headers: bearer},
		{name: "mTLS cert of another CA", mtls: true, token: true, cert: &unknown, headers: bearer},
	}
	for _, tt := range tests {
		for _, tr := range []transport{transportGRPC, transportHTTP} {
			t.Run(tt.name+"/"+tr.String(), func(t *testing.T) {
				var ca *testCA
				if tt.mtls {
					ca = clientCA
				}
				p := newPKI(t, ca)
				cfg := testConfig()
				cfg.TLS = p.cfg
				if tt.token {
					cfg.Auth.BearerTokenFile = filepath.Join(t.TempDir(), "token")
					writeToken(t, cfg.Auth.BearerTokenFile, "  "+token+"\n")
				}
				rec := &recorder{}
				r := startSecureReceiver(t, cfg, rec)

				err := sdkExport(t, r, tr, p.clientTLS(tt.cert), tt.headers)
				if (err == nil) != tt.wantOK {
					t.Fatalf("export error = %v, want error %t", err, !tt.wantOK)
				}
				if tt.wantCode != codes.OK && tr == transportGRPC {
					if got := status.Code(err); got != tt.wantCode {
						t.Errorf("export error code = %v, want %v (%v)", got, tt.wantCode, err)
					}
				}
				var want []recordedSpan
				if tt.wantOK {
					want = wantSDKSpans()
				}
				if diff := cmp.Diff(rec.got(), want); diff != "" {
					t.Errorf("spans consumed (-got +want):\n%s", diff)
				}
				var wantCount float64
				if tt.wantUnauthenticated {
					wantCount = 1
				}
				if got := testutil.ToFloat64(r.core.metrics.rejectedRequests[tr][reasonUnauthenticated]); got != wantCount {
					t.Errorf("rejected requests (unauthenticated) = %v, want %v", got, wantCount)
				}
			})
		}
	}
}

// TestUnauthenticatedRefusedBeforeBody sends requests that announce a body
// and never send it: the answer can only come before the body is read.
func TestUnauthenticatedRefusedBeforeBody(t *testing.T) {
	p := newPKI(t, nil)
	cfg := testConfig()
	cfg.TLS = p.cfg
	cfg.Auth.BearerTokenFile = filepath.Join(t.TempDir(), "token")
	writeToken(t, cfg.Auth.BearerTokenFile, "tok")
	r := startSecureReceiver(t, cfg, &recorder{})

	t.Run("http", func(t *testing.T) {
		conn, err := tls.Dial("tcp", r.HTTPAddr().String(), p.clientTLS(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		// 1 GiB, far past MaxRequestBytes: the token is checked first.
		const req = "POST /v1/traces HTTP/1.1\r\nHost: lagscope\r\nContent-Type: application/x-protobuf\r\n" +
			"Authorization: Bearer wrong\r\nContent-Length: 1073741824\r\n\r\n"
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status = %d, want 401", resp.StatusCode)
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("WWW-Authenticate = %q, want Bearer", got)
		}
		if used := r.core.limiter.inUse(); used != 0 {
			t.Errorf("in-flight bytes reserved for the refused body = %d, want 0", used)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		conn, err := grpc.NewClient(r.GRPCAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS(nil))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")
		// The stream opens with its headers; no message is ever sent.
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, traceExportPath,
			grpc.ForceCodecV2(newRawCodec()))
		if err != nil {
			t.Fatal(err)
		}
		err = stream.RecvMsg(&rawMessage{})
		if got := status.Code(err); got != codes.Unauthenticated {
			t.Errorf("RecvMsg error = %v, want code Unauthenticated", err)
		}
	})

	for _, tr := range []transport{transportGRPC, transportHTTP} {
		if got := testutil.ToFloat64(r.core.metrics.rejectedRequests[tr][reasonUnauthenticated]); got != 1 {
			t.Errorf("rejected requests (%s, unauthenticated) = %v, want 1", tr, got)
		}
	}
}

// serverSerial dials addr and returns the serial of the certificate the
// server presents.
func serverSerial(t *testing.T, addr string, cfg *tls.Config) (int64, error) {
	t.Helper()
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestCertificateRotation(t *testing.T) {
	clientCA := newTestCA(t, "client CA")
	client := clientCA.Valid(t, 200, true)
	p := newPKI(t, clientCA)
	cfg := testConfig()
	cfg.TLS = p.cfg
	rec := &recorder{}
	r := startSecureReceiver(t, cfg, rec)

	// An open connection outlives the rotation with the old certificate.
	open, err := tls.Dial("tcp", r.HTTPAddr().String(), p.clientTLS(&client))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	for _, addr := range []string{r.GRPCAddr().String(), r.HTTPAddr().String()} {
		cfg := p.clientTLS(&client)
		if addr == r.GRPCAddr().String() {
			cfg.NextProtos = []string{"h2"}
		}
		if got, err := serverSerial(t, addr, cfg); err != nil || got != 100 {
			t.Fatalf("serial before rotation = %d, %v; want 100", got, err)
		}
	}

	// A half-done rotation (the new key, the old certificate) keeps the
	// old pair; the new pair is served once both are written.
	next := p.serverCA.Valid(t, 101, false)
	writeFile(t, p.cfg.KeyFile, next.KeyPEM)
	// Past the interval, the next handshake looks at the files and finds
	// the pair mismatched.
	time.Sleep(2 * testReloadInterval)
	if got, err := serverSerial(t, r.HTTPAddr().String(), p.clientTLS(&client)); err != nil || got != 100 {
		t.Fatalf("serial with a mismatched key = %d, %v; want 100", got, err)
	}
	writeFile(t, p.cfg.CertFile, next.CertPEM)
	for _, addr := range []string{r.GRPCAddr().String(), r.HTTPAddr().String()} {
		cfg := p.clientTLS(&client)
		if addr == r.GRPCAddr().String() {
			cfg.NextProtos = []string{"h2"}
		}
		waitFor(t, "serial 101 from "+addr, func() bool {
			got, err := serverSerial(t, addr, cfg)
			return err == nil && got == 101
		})
	}
	if got := open.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 100 {
		t.Errorf("serial of the connection opened before = %d, want 100", got)
	}
	for _, tr := range []transport{transportGRPC, transportHTTP} {
		if err := sdkExport(t, r, tr, p.clientTLS(&client), nil); err != nil {
			t.Errorf("export over %s after rotation: %v", tr, err)
		}
	}

	// The client CA rotates too: clients of the new CA get in, those of the
	// old one no longer do.
	newCA := newTestCA(t, "new client CA")
	newClient := newCA.Valid(t, 300, true)
	writeFile(t, p.cfg.ClientCAFile, newCA.PEM)
	waitFor(t, "the new client CA", func() bool {
		return sdkExport(t, r, transportHTTP, p.clientTLS(&newClient), nil) == nil
	})
	for _, tr := range []transport{transportGRPC, transportHTTP} {
		if err := sdkExport(t, r, tr, p.clientTLS(&newClient), nil); err != nil {
			t.Errorf("export over %s with a client of the new CA: %v", tr, err)
		}
		if err := sdkExport(t, r, tr, p.clientTLS(&client), nil); err == nil {
			t.Errorf("export over %s with a client of the old CA succeeded, want refused", tr)
		}
	}
}

func TestTokenRotation(t *testing.T) {
	p := newPKI(t, nil)
	cfg := testConfig()
	cfg.TLS = p.cfg
	cfg.Auth.BearerTokenFile = filepath.Join(t.TempDir(), "token")
	writeToken(t, cfg.Auth.BearerTokenFile, "first\n")
	r := startSecureReceiver(t, cfg, &recorder{})
	with := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

	for _, tr := range []transport{transportGRPC, transportHTTP} {
		if err := sdkExport(t, r, tr, p.clientTLS(nil), with("first")); err != nil {
			t.Fatalf("export over %s with the first token: %v", tr, err)
		}
	}
	// An empty file is a failed rotation: the first token stays.
	writeToken(t, cfg.Auth.BearerTokenFile, "\n")
	time.Sleep(2 * testReloadInterval) // past it, the next request looks at the file
	if err := sdkExport(t, r, transportHTTP, p.clientTLS(nil), with("first")); err != nil {
		t.Fatalf("export with the first token after an empty token file: %v", err)
	}
	writeToken(t, cfg.Auth.BearerTokenFile, "second")
	waitFor(t, "the second token", func() bool {
		return sdkExport(t, r, transportHTTP, p.clientTLS(nil), with("second")) == nil
	})
	for _, tr := range []transport{transportGRPC, transportHTTP} {
		if err := sdkExport(t, r, tr, p.clientTLS(nil), with("second")); err != nil {
			t.Errorf("export over %s with the second token: %v", tr, err)
		}
		err := sdkExport(t, r, tr, p.clientTLS(nil), with("first"))
		if err == nil {
			t.Errorf("export over %s with the first token succeeded, want refused", tr)
		}
		if tr == transportGRPC && status.Code(err) != codes.Unauthenticated {
			t.Errorf("export over gRPC with the first token: %v, want code Unauthenticated", err)
		}
	}
}

func TestSecurityConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "CA")
	l := ca.Valid(t, 1, false)
	other := ca.Valid(t, 2, false)
	files := map[string][]byte{
		"cert": l.CertPEM, "key": l.KeyPEM, "other.key": other.KeyPEM, "ca": ca.PEM,
		"junk": []byte("not PEM"), "empty": []byte(" \n"), "token": []byte("tok"),
	}
	for name, b := range files {
		writeFile(t, filepath.Join(dir, name), b)
	}
	path := func(name string) string { return filepath.Join(dir, name) }

	tests := []struct {
		name        string
		tls         TLSConfig
		auth        AuthConfig
		wantInvalid bool // Validate refuses it
		wantErr     bool // New refuses it
		wantIs      error
	}{
		{name: "none"},
		{name: "TLS", tls: TLSConfig{CertFile: path("cert"), KeyFile: path("key")}},
		{name: "mTLS and token", tls: TLSConfig{CertFile: path("cert"), KeyFile: path("key"), ClientCAFile: path("ca")},
			auth: AuthConfig{BearerTokenFile: path("token")}},
		{name: "token without TLS", auth: AuthConfig{BearerTokenFile: path("token")}},
		{name: "cert without key", tls: TLSConfig{CertFile: path("cert")}, wantInvalid: true},
		{name: "key without cert", tls: TLSConfig{KeyFile: path("key")}, wantInvalid: true},
		{name: "client CA without cert", tls: TLSConfig{ClientCAFile: path("ca")}, wantInvalid: true},
		{name: "missing cert file", tls: TLSConfig{CertFile: path("nope"), KeyFile: path("key")}, wantErr: true, wantIs: os.ErrNotExist},
		{name: "key of another cert", tls: TLSConfig{CertFile: path("cert"), KeyFile: path("other.key")}, wantErr: true},
		{name: "client CA not PEM", tls: TLSConfig{CertFile: path("cert"), KeyFile: path("key"), ClientCAFile: path("junk")}, wantErr: true},
		{name: "missing token file", auth: AuthConfig{BearerTokenFile: path("nope")}, wantErr: true, wantIs: os.ErrNotExist},
		{name: "empty token", auth: AuthConfig{BearerTokenFile: path("empty")}, wantErr: true, wantIs: errEmptyToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.TLS, cfg.Auth = tt.tls, tt.auth
			if err := cfg.Validate(); (err != nil) != tt.wantInvalid {
				t.Fatalf("Validate() = %v, want error %t", err, tt.wantInvalid)
			}
			_, err := New(cfg, &recorder{}, nil, nil)
			if (err != nil) != (tt.wantErr || tt.wantInvalid) {
				t.Fatalf("New() error = %v, want error %t", err, tt.wantErr || tt.wantInvalid)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("New() error = %v, want one that is %v", err, tt.wantIs)
			}
		})
	}
}

func TestBearerAuthorized(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeToken(t, path, "\t abc.DEF-123 \n")
	a, err := newBearerAuth(AuthConfig{BearerTokenFile: path}, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		values []string
		want   bool
	}{
		{"token", []string{"Bearer abc.DEF-123"}, true},
		{"scheme in lower case", []string{"bearer abc.DEF-123"}, true},
		{"two spaces", []string{"Bearer  abc.DEF-123"}, true},
		{"none", nil, false},
		{"empty", []string{""}, false},
		{"scheme only", []string{"Bearer"}, false},
		{"empty token", []string{"Bearer "}, false},
		{"token alone", []string{"abc.DEF-123"}, false},
		{"other scheme", []string{"Basic abc.DEF-123"}, false},
		{"prefix of the token", []string{"Bearer abc.DEF-12"}, false},
		{"token and more", []string{"Bearer abc.DEF-1234"}, false},
		{"other case", []string{"Bearer ABC.DEF-123"}, false},
		{"two headers", []string{"Bearer abc.DEF-123", "Bearer abc.DEF-123"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.authorized(tt.values); got != tt.want {
				t.Errorf("authorized(%q) = %t, want %t", tt.values, got, tt.want)
			}
		})
	}
}

// BenchmarkBearerAuthorized is the cost the token adds to each request.
func BenchmarkBearerAuthorized(b *testing.B) {
	path := filepath.Join(b.TempDir(), "token")
	writeToken(b, path, "0123456789abcdef0123456789abcdef")
	a, err := newBearerAuth(AuthConfig{BearerTokenFile: path}, defaultReloadInterval, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	values := []string{"Bearer 0123456789abcdef0123456789abcdef"}
	b.ReportAllocs()
	for b.Loop() {
		if !a.authorized(values) {
			b.Fatal("refused")
		}
	}
}
