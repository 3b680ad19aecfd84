package journal

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

func sampleFrames(t testing.TB) [][]byte {
	in := safegen.Intent{ID: "id", Key: "key", Method: "POST", Path: "/v1/generations", Body: []byte{0, 1, 0xff}, CreatedAt: time.Unix(1, 0)}
	b, err := encodeRecord(nil, &record{Op: opBegin, Intent: &in})
	require.NoError(t, err)
	c, err := encodeRecord(nil, &record{Op: opComplete, Key: "key", Outcome: &safegen.Outcome{StatusCode: 201}})
	require.NoError(t, err)
	h, err := encodeRecord(nil, &record{Op: opHeader, Version: FormatVersion})
	require.NoError(t, err)
	job := safegen.Job{Step: safegen.JobDownloaded, Path: "out/fox.mp4", GenerationID: "gen_1", Status: safegen.StatusSucceeded,
		Size: 1 << 20, SHA256: "ab12", UpdatedAt: time.Unix(2, 0)}
	jb, err := encodeRecord(nil, &record{Op: opJob, Key: "key", Job: &job, At: time.Unix(3, 0)})
	require.NoError(t, err)
	in.Job = &job
	bj, err := encodeRecord(nil, &record{Op: opBegin, Intent: &in})
	require.NoError(t, err)
	return [][]byte{b, c, h, jb, bj}
}

func TestDecodeRecord(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string
		op      string // "" when the record is refused
	}{
		{"header", `{"op":"header","version":2}`, opHeader},
		{"future header", `{"op":"header","version":9,"extra":true}`, opHeader},
		{"header without version", `{"op":"header"}`, ""},
		{"header version zero", `{"op":"header","version":0}`, ""},
		{"header negative version", `{"op":"header","version":-1}`, ""},
		{"job", `{"op":"job","key":"k","job":{"step":"accepted","path":"p","generation_id":"g"}}`, opJob},
		{"job with unknown step", `{"op":"job","key":"k","job":{"step":"later"}}`, opJob},
		{"job without key", `{"op":"job","job":{"step":"started"}}`, ""},
		{"job without job", `{"op":"job","key":"k"}`, ""},
		{"job null", `{"op":"job","key":"k","job":null}`, ""},
		{"job of wrong type", `{"op":"job","key":"k","job":"started"}`, ""},
		{"begin with job", `{"op":"begin","intent":{"id":"a","key":"k","method":"POST","path":"/","created_at":"2025-01-01T00:00:00Z","job":{"step":"started"}}}`, opBegin},
		{"reserve", `{"op":"reserve","key":"k","credits":12.5}`, opReserve},
		{"reserve of nothing", `{"op":"reserve","key":"k"}`, opReserve},
		{"reserve without key", `{"op":"reserve","credits":1}`, ""},
		{"reserve negative", `{"op":"reserve","key":"k","credits":-1}`, ""},
		{"settle", `{"op":"settle","key":"k","credits":3}`, opSettle},
		{"settle to zero", `{"op":"settle","key":"k"}`, opSettle},
		{"settle without key", `{"op":"settle","credits":3}`, ""},
		{"settle negative", `{"op":"settle","key":"k","credits":-3}`, ""},
		{"settle of wrong type", `{"op":"settle","key":"k","credits":"3"}`, ""},
		{"spent", `{"op":"spent","credits":1e6}`, opSpent},
		{"spent with key", `{"op":"spent","key":"k","credits":1}`, ""},
		{"spent negative", `{"op":"spent","credits":-1}`, ""},
		{"unknown op", `{"op":"later"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeRecord([]byte(tc.payload))
			if tc.op == "" {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.op, r.Op)
		})
	}
}

func TestDecodeFrame(t *testing.T) {
	frames := sampleFrames(t)
	good := frames[0]
	huge := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(huge[4:8], MaxRecordSize+1)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-3] ^= 0x10
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"intact", good, nil},
		{"intact with trailing bytes", append(append([]byte(nil), good...), frames[1]...), nil},
		{"empty", nil, errShort},
		{"partial magic", good[:2], errShort},
		{"partial header", good[:headerSize-1], errShort},
		{"partial payload", good[:len(good)-1], errShort},
		{"bad magic", append([]byte{'X'}, good[1:]...), errMagic},
		{"short garbage", []byte{'x'}, errMagic},
		{"length over limit", huge, errLength},
		{"bit flip", flipped, errChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload, n, err := decodeFrame(tc.data)
			require.ErrorIs(t, err, tc.want)
			if tc.want == nil {
				require.Equal(t, len(good), n)
				require.Equal(t, good[headerSize:], payload)
			}
		})
	}
}

// A length field claiming almost MaxRecordSize must not make the decoder
// allocate: it only ever slices what it was given.
func TestDecodeFrameAllocatesNothing(t *testing.T) {
	data := append([]byte(nil), sampleFrames(t)[0]...)
	binary.LittleEndian.PutUint32(data[4:8], MaxRecordSize)
	allocs := testing.AllocsPerRun(100, func() {
		_, _, err := decodeFrame(data)
		require.ErrorIs(t, err, errShort)
	})
	require.Zero(t, allocs)
}

func TestScanAccountsForEveryByte(t *testing.T) {
	frames := sampleFrames(t)
	data := bytes.Join([][]byte{frames[0], []byte("garbage"), frames[1], frames[0][:5]}, nil)
	res := scan(data)
	require.Len(t, res.records, 2)
	require.Len(t, res.middle, 1)
	require.Equal(t, damage{len(frames[0]), len("garbage"), errMagic.Error()}, res.middle[0])
	require.NotNil(t, res.tail)
	require.Equal(t, 5, res.tail.n)
	require.Equal(t, len(data)-5, res.end)
}

// FuzzDecode feeds arbitrary bytes to the record decoder and the file
// scanner: they must never panic, never claim bytes they were not given,
// account for every byte as an intact record or a damaged span, and never
// accept a format version they do not read.
func FuzzDecode(f *testing.F) {
	frames := sampleFrames(f)
	f.Add(frames[0])
	f.Add(bytes.Join(frames, nil))
	f.Add(bytes.Join([][]byte{frames[0], {0xff, 'S', 'G'}, frames[1]}, nil))
	f.Add(frames[1][:7])
	f.Add(bytes.Join([][]byte{frames[2], frames[4], frames[3], frames[1]}, nil)) // a version 2 file
	f.Add(frames[3])
	f.Add(frames[2][:headerSize+5])
	f.Add(appendFrame(nil, []byte(`{"op":"header","version":99}`)))
	f.Add(appendFrame(nil, []byte(`{"op":"job","key":"k","job":{"step":1}}`)))
	f.Add([]byte{0xff, 'S', 'G', 'J', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		payload, n, err := decodeFrame(data)
		if err == nil {
			if n > len(data) || n-headerSize > MaxRecordSize || len(payload) != n-headerSize {
				t.Fatalf("frame of %d bytes from %d bytes", n, len(data))
			}
			if re := appendFrame(nil, payload); !bytes.Equal(re, data[:n]) {
				t.Fatalf("re-encoding differs")
			}
			_, _ = decodeRecord(payload)
		}
		res := scan(data)
		covered := 0
		for _, r := range res.records {
			covered += r.size
		}
		for _, d := range res.middle {
			covered += d.n
		}
		if res.tail != nil {
			covered += res.tail.n
			if res.tail.off != res.end || res.tail.off+res.tail.n != len(data) {
				t.Fatalf("tail %+v does not end the data (end %d, len %d)", *res.tail, res.end, len(data))
			}
		}
		if covered != len(data) {
			t.Fatalf("scan accounted for %d of %d bytes", covered, len(data))
		}
		if v, err := versionOf(res); err == nil && (v < 1 || v > FormatVersion) {
			t.Fatalf("version %d accepted", v)
		}
		// Zeros a File preallocated past intact data change nothing: the
		// same records, and a tail Open takes for free space.
		if res.tail == nil {
			more := append(bytes.Clone(data), make([]byte, 1+len(data)%4096)...)
			res2 := scan(more)
			if len(res2.records) != len(res.records) || res2.end != res.end || len(res2.middle) != len(res.middle) {
				t.Fatalf("zeros after the data changed the scan: %d records to %d, end %d to %d", len(res.records), len(res2.records), res.end, res2.end)
			}
			if res2.tail == nil || !preallocated(more[res2.end:]) {
				t.Fatalf("zeros after the data not taken for preallocation: %+v", res2.tail)
			}
		}
	})
}
