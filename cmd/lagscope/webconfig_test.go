package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestMetricsWebConfig puts /metrics behind an exporter-toolkit web config
// with basic auth and TLS, as node_exporter's --web.config.file does: no
// credentials and a wrong password get 401, the right ones 200, the health
// endpoints too; curl, when installed, agrees.
func TestMetricsWebConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, []byte("tls_server_config:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+
		"\nbasic_auth_users:\n  prometheus: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *Config) { c.Web.ConfigFile = webConfig })
	url := s.MetricsURL()
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("metrics URL %s, want https", url)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := strings.TrimSuffix(url, "/metrics")
	for _, tt := range []struct {
		name, path, user, password string
		want                       int
	}{
		{"no credentials", "/metrics", "", "", http.StatusUnauthorized},
		{"wrong password", "/metrics", "prometheus", "guess", http.StatusUnauthorized},
		{"unknown user", "/metrics", "root", "s3cret", http.StatusUnauthorized},
		{"right credentials", "/metrics", "prometheus", "s3cret", http.StatusOK},
		{"health without credentials", "/-/healthy", "", "", http.StatusUnauthorized},
		{"health with credentials", "/-/healthy", "prometheus", "s3cret", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.password)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s: %d, want %d", tt.user, tt.path, resp.StatusCode, tt.want)
			}
		})
	}
	// Plain HTTP on the TLS port is refused.
	if resp, err := http.Get("http://" + strings.TrimPrefix(url, "https://")); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP scrape answered 200 on the TLS endpoint")
		}
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Log("no curl on PATH: the curl checks are skipped")
		return
	}
	caFile := filepath.Join(dir, "ca.pem")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"curl without credentials", nil, "401"},
		{"curl with a wrong password", []string{"-u", "prometheus:guess"}, "401"},
		{"curl with the right password", []string{"-u", "prometheus:s3cret"}, "200"},
	} {
		args := append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", caFile}, tt.args...)
		out, err := exec.Command(curl, append(args, url)...).Output()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if string(out) != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, out, tt.want)
		}
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into dir (and the certificate again as ca.pem), returning the files and a
// pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lagscope test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, b := range map[string][]byte{
		certFile: certPEM, filepath.Join(dir, "ca.pem"): certPEM,
		keyFile: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}
