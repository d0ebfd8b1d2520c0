package forward

import (
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/lagscope/lagscope/collector"
)

// tlsBackend serves OTLP over TLS on both transports with httptest's
// certificate, answering every export with an empty success, and counts
// the exports. ca is the PEM file of its certificate.
type tlsBackend struct {
	grpcAddr, httpAddr, ca string
	exports                atomic.Int32
}

func startTLSBackend(t *testing.T) *tlsBackend {
	t.Helper()
	b := &tlsBackend{}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == collector.TracesHTTPPath {
			b.exports.Add(1)
		}
	}))
	hs.StartTLS()
	t.Cleanup(hs.Close)
	b.httpAddr = hs.Listener.Addr().String()
	b.ca = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(b.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: hs.TLS.Certificates})),
		grpc.ForceServerCodecV2(collector.ClientCodec()),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var req []byte
			if err := stream.RecvMsg(&req); err != nil {
				return err
			}
			if m, _ := grpc.MethodFromServerStream(stream); m == collector.TracesGRPCMethod {
				b.exports.Add(1)
			}
			resp := []byte{}
			return stream.SendMsg(&resp)
		}))
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})
	b.grpcAddr = ln.Addr().String()
	return b
}

func TestForwardOverTLS(t *testing.T) {
	b := startTLSBackend(t)
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			addr := b.grpcAddr
			if protocol == ProtocolHTTP {
				addr = b.httpAddr
			}
			before := b.exports.Load()
			cfg := testConfig(protocol, addr)
			cfg.TLS.CAFile = b.ca
			f := newForwarder(t, cfg)
			f.Forward(encode(t, traces(1, 2, 0), Protobuf), Protobuf, 2)
			shutdown(t, f, 5*time.Second)
			if diff := cmp.Diff(f.counts(), counts{Sent: 2, Dropped: map[string]int{}}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
			if got := b.exports.Load() - before; got != 1 {
				t.Errorf("backend saw %d exports, want 1", got)
			}
		})
	}
}

func TestForwardRefusesAnUntrustedCertificate(t *testing.T) {
	b := startTLSBackend(t)
	cfg := testConfig(ProtocolHTTP, b.httpAddr)
	cfg.TLS.Enabled = true // the system's roots, which do not hold httptest's
	cfg.Retry.MaxElapsedTime = 0
	f := newForwarder(t, cfg)
	f.Forward(encode(t, traces(1, 2, 0), Protobuf), Protobuf, 2)
	shutdown(t, f, 5*time.Second)
	if got := b.exports.Load(); got != 0 {
		t.Errorf("backend saw %d exports over an untrusted connection", got)
	}
	if diff := cmp.Diff(f.counts(), counts{Dropped: map[string]int{"retries_exhausted": 2}}); diff != "" {
		t.Errorf("counts (-got +want):\n%s", diff)
	}
}
