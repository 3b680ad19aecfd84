//go:build !unix

package journal

import "os"

// lockFile does nothing on this platform: the File journal relies on its
// caller to open a journal from one process at a time. Two Files on the same
// path here can interleave records and lose intents.
func lockFile(*os.File) error { return nil }

// syncDir does nothing on this platform, which cannot sync a directory; a
// rename is as durable as the file system makes it.
func syncDir(string) error { return nil }
