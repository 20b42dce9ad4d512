package pcspb

import "testing"

// TestPausedSchedulersSetting: pausing adds the scheduler to those paused, resuming takes it
// out, the others stay as they are, and an unknown name is reported.
func TestPausedSchedulersSetting(t *testing.T) {
	s := []*SchedulerInfo{{Name: "a", Paused: true}, {Name: "b"}, {Name: "c", Paused: true}}
	for _, c := range []struct {
		name  string
		pause bool
		want  string
		found bool
	}{
		{"b", true, "a,b,c", true},
		{"a", false, "c", true},
		{"c", true, "a,c", true},
		{"x", true, "a,c", false},
	} {
		if got, found := PausedSchedulersSetting(s, c.name, c.pause); got != c.want || found != c.found {
			t.Errorf("%s pause=%v: %q %v, want %q %v", c.name, c.pause, got, found, c.want, c.found)
		}
	}
}
