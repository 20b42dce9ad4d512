package kvnode

import "github.com/cockroachdb/pebble/v2/vfs"

// stallFS is Pebble's file system with a hook before every sync of a file written through it.
type stallFS struct {
	vfs.FS
	stall func()
}

func (fs stallFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return stallFile{File: f, stall: fs.stall}, nil
}

func (fs stallFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs stallFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func (fs stallFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

func (fs stallFS) OpenDir(name string) (vfs.File, error) { return fs.wrap(fs.FS.OpenDir(name)) }

func (fs stallFS) Unwrap() vfs.FS { return fs.FS }

type stallFile struct {
	vfs.File
	stall func()
}

func (f stallFile) Sync() error {
	f.stall()
	return f.File.Sync()
}

func (f stallFile) SyncData() error {
	f.stall()
	return f.File.SyncData()
}

func (f stallFile) SyncTo(length int64) (bool, error) {
	f.stall()
	return f.File.SyncTo(length)
}
