package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestWebSystemdSocket starts `lagscope serve --web.systemd-socket` as
// systemd's socket activation does: the listening socket as fd 3,
// LISTEN_FDS=1 and LISTEN_PID the process's own pid (sh's exec keeps it).
// The metrics are served on that socket.
func TestWebSystemdSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := []string{"serve", "--web.systemd-socket", "--otlp.grpc-endpoint=127.0.0.1:0", "--otlp.http-endpoint=127.0.0.1:0"}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", mainChildEnv+"="+strings.Join(args, "\x1f"))
	cmd.ExtraFiles = []*os.File{f}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var log strings.Builder
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "lagscope serving") {
				serving <- sc.Text()
			}
		}
		serving <- "exited:\n" + log.String()
	}()
	var line string
	select {
	case line = <-serving:
	case <-time.After(30 * time.Second):
		t.Fatal("lagscope serve did not start")
	}
	url := "http://" + ln.Addr().String() + "/metrics"
	if !strings.Contains(line, "metrics="+url) {
		t.Errorf("lagscope serves its metrics elsewhere than on systemd's socket %s:\n%s", url, line)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape systemd's socket: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "lagscope_build_info") {
		t.Errorf("scrape of systemd's socket: %d\n%.300s", resp.StatusCode, body)
	}
}
