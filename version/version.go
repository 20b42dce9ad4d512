// Package version reports the build of the running binary: module version, VCS revision and
// time, and the Go toolchain, from the build information the Go linker embeds.
package version

import (
	"fmt"
	"runtime/debug"
)

// Info is a binary's build.
type Info struct {
	Version  string // the main module's version ("(devel)" for a build from a work tree)
	Revision string // VCS revision, with "-dirty" if the work tree had changes
	Time     string // VCS commit time
	Go       string // toolchain
}

// Get reads the build information of the running binary.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown"}
	}
	in := Info{Version: bi.Main.Version, Go: bi.GoVersion}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		in.Revision += "-dirty"
	}
	return in
}

// String is one line: version, revision, commit time and toolchain.
func (i Info) String() string {
	rev, at := i.Revision, i.Time
	if rev == "" {
		rev = "unknown revision"
	}
	if at == "" {
		at = "unknown time"
	}
	return fmt.Sprintf("%s (%s, %s, %s)", i.Version, rev, at, i.Go)
}
