package server

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is set at build time with
// -ldflags "-X github.com/lagscope/lagscope/server.Version=v1.2.3"; else it
// comes from the module's build info.
var Version = ""

// VersionString is the version lagscope was built from.
func VersionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// PrintVersion writes the version line of `lagscope version`.
func PrintVersion(w io.Writer) {
	fmt.Fprintf(w, "lagscope %s (%s, %s/%s)\n", VersionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "lagscope_build_info",
		Help:        "A metric with a constant 1 value labelled by the version lagscope was built from.",
		ConstLabels: prometheus.Labels{"version": VersionString(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
