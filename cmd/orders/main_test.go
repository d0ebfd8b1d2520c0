package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestServeAndLoad(t *testing.T) {
	addr := freeAddr(t)
	store := "sqlite:" + filepath.Join(t.TempDir(), "orders.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var serveErr bytes.Buffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--store", store, "--listen", addr, "--fault", "sales_summary:drop=1"}, &bytes.Buffer{}, &serveErr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %v\n%s", err, serveErr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"load", "--url", "http://" + addr, "--rate", "500", "--count", "30", "--seed", "3"}, &out, &errOut)
	if err != nil {
		t.Fatalf("load error = %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "commands: 30 ") || !strings.Contains(out.String(), ", 0 failed") {
		t.Errorf("load summary = %q", out.String())
	}
	if errOut.Len() == 0 {
		t.Error("no progress bar on stderr")
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// TestServeKafka serves on the Kafka bus (an in-process broker) and sends
// load: the projectors, reading the topic, show every order.
func TestServeKafka(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var serveErr bytes.Buffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--store", "sqlite::memory:", "--listen", addr, "--bus", "kafka",
			"--kafka.brokers", strings.Join(broker.ListenAddrs(), ","), "--kafka.topic", "test.events"}, &bytes.Buffer{}, &serveErr)
	}()
	waitHTTP(t, "http://"+addr+"/healthz", &serveErr)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"load", "--url", "http://" + addr, "--rate", "500", "--count", "20", "--seed", "3", "--mix", "create=1,pay=0,ship=0,cancel=0", "--no-progress"}, &out, &errOut); err != nil {
		t.Fatalf("load error = %v\n%s", err, errOut.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/orders/summary")
		if err != nil {
			t.Fatal(err)
		}
		var sum struct{ Orders int }
		err = json.NewDecoder(resp.Body).Decode(&sum)
		resp.Body.Close()
		if err == nil && sum.Orders == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("summary shows %d orders, want 20 (err %v)\n%s", sum.Orders, err, serveErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func waitHTTP(t *testing.T, url string, logs *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %v\n%s", err, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr error
		// wantAnyErr accepts any error (a configuration error, not usage).
		wantAnyErr bool
	}{
		{name: "no command", args: nil, wantErr: errUsage},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: errUsage},
		{name: "help", args: []string{"help"}},
		{name: "serve help", args: []string{"serve", "-h"}, wantErr: flag.ErrHelp},
		{name: "unknown flag", args: []string{"serve", "--nope"}, wantErr: errUsage},
		{name: "bad fault", args: []string{"serve", "--fault", "orders_view:drop=7"}, wantErr: errUsage},
		{name: "extra argument", args: []string{"load", "extra"}, wantErr: errUsage},
		{name: "bad mix", args: []string{"load", "--mix", "create=x"}, wantAnyErr: true},
		{name: "kafka bus without brokers", args: []string{"serve", "--bus", "kafka", "--store", "sqlite::memory:"}, wantAnyErr: true},
		{name: "unknown bus", args: []string{"serve", "--bus", "nats", "--store", "sqlite::memory:"}, wantAnyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, &bytes.Buffer{}, &bytes.Buffer{})
			if tt.wantAnyErr {
				if err == nil {
					t.Error("run() error = nil, want an error")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("run() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
