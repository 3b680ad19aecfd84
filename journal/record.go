package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	safegen "github.com/safegen/safegen-go"
)

// MaxRecordSize is the largest payload one journal record may hold. A record
// announcing more is treated as damage, so a corrupted length can never make
// the decoder allocate or read beyond it.
const MaxRecordSize = 16 << 20

// A record is framed as magic, payload length (uint32, little endian),
// CRC-32C of the length bytes and the payload (uint32, little endian), then
// the payload: the JSON of one record.
const headerSize = 12

// magic starts every record. 0xFF never occurs in UTF-8, hence never in a
// JSON payload, which makes resynchronising after damage reliable.
var magic = [4]byte{0xFF, 'S', 'G', 'J'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FormatVersion is the journal file format this release writes. It reads
// every version up to it:
//
//   - Version 1 (no header record) holds begin and complete records. A
//     version 1 file opens and behaves as it did; it is rewritten as version 2
//     by its first compaction or before its first job or spend record.
//   - Version 2 starts with a header record {"op":"header","version":2} and
//     adds job records ({"op":"job","key":...,"job":{...}}), the job of an
//     intent in begin records, and the spend records of File's
//     safegen.SpendJournal: reserve ({"op":"reserve","key":...,"credits":C}:
//     C credits held for the call with this key), settle
//     ({"op":"settle","key":...,"credits":C}: its charge is C, its
//     reservation released; a missing credits is 0) and spent
//     ({"op":"spent","credits":C}: charges of keys the file no longer
//     lists, written by compaction).
//
// A file whose header names a newer version is refused with
// ErrUnsupportedVersion and left untouched.
const FormatVersion = 2

// Record operations.
const (
	opHeader   = "header" // version 2: the first record, naming the format version
	opBegin    = "begin"
	opComplete = "complete"
	opJob      = "job"     // version 2: the job progress of the intent with Key
	opReserve  = "reserve" // version 2: Credits reserved for the call with Key
	opSettle   = "settle"  // version 2: the call with Key charged Credits
	opSpent    = "spent"   // version 2: Credits charged to keys no longer listed
)

// record is the payload of one journal record: a header carries the format
// version, a begin carries the intent (with its outcome and job, and At,
// when written by compaction), a complete carries the key and the outcome,
// a job carries the key and the job, a reserve or a settle the key and the
// credits, a spent the credits.
type record struct {
	Op      string           `json:"op"`
	Version int              `json:"version,omitempty"`
	Intent  *safegen.Intent  `json:"intent,omitempty"`
	Key     string           `json:"key,omitempty"`
	Outcome *safegen.Outcome `json:"outcome,omitempty"`
	Job     *safegen.Job     `json:"job,omitempty"`
	Credits float64          `json:"credits,omitempty"`
	// At is when the journal recorded the outcome or the job, on its own
	// clock; the retention period runs from when the intent was finished.
	At time.Time `json:"at,omitzero"`
}

var (
	errShort    = errors.New("truncated record")
	errMagic    = errors.New("bad magic")
	errLength   = errors.New("record length over the limit")
	errChecksum = errors.New("checksum mismatch")
)

// appendFrame appends the framed payload to dst.
func appendFrame(dst, payload []byte) []byte {
	var h [headerSize]byte
	copy(h[:4], magic[:])
	binary.LittleEndian.PutUint32(h[4:8], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, h[4:8])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[8:12], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// encodeRecord appends the framed record r to dst.
func encodeRecord(dst []byte, r *record) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return dst, fmt.Errorf("journal: encode %s record: %w", r.Op, err)
	}
	if len(payload) > MaxRecordSize {
		return dst, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxRecordSize)
	}
	return appendFrame(dst, payload), nil
}

// decodeFrame decodes the frame at the start of data. It returns the payload
// (a sub-slice of data: it allocates nothing) and the frame's total size.
// It never panics, whatever data holds.
func decodeFrame(data []byte) (payload []byte, n int, err error) {
	if len(data) < headerSize {
		if !bytes.HasPrefix(magic[:], data[:min(len(data), len(magic))]) {
			return nil, 0, errMagic
		}
		return nil, 0, errShort
	}
	if !bytes.Equal(data[:4], magic[:]) {
		return nil, 0, errMagic
	}
	size := binary.LittleEndian.Uint32(data[4:8])
	if size > MaxRecordSize {
		return nil, 0, errLength
	}
	n = headerSize + int(size)
	if len(data) < n {
		return nil, 0, errShort
	}
	crc := crc32.Update(0, castagnoli, data[4:8])
	crc = crc32.Update(crc, castagnoli, data[headerSize:n])
	if crc != binary.LittleEndian.Uint32(data[8:12]) {
		return nil, 0, errChecksum
	}
	return data[headerSize:n], n, nil
}

// decodeRecord decodes and checks one payload.
func decodeRecord(payload []byte) (record, error) {
	var r record
	if err := json.Unmarshal(payload, &r); err != nil {
		return record{}, fmt.Errorf("undecodable payload: %w", err)
	}
	switch r.Op {
	case opHeader:
		if r.Version < 1 {
			return record{}, errors.New("header record without a version")
		}
	case opBegin:
		if r.Intent == nil {
			return record{}, errors.New("begin record without intent")
		}
		if err := r.Intent.Validate(); err != nil {
			return record{}, fmt.Errorf("begin record: %w", err)
		}
	case opComplete:
		if r.Key == "" || r.Outcome == nil {
			return record{}, errors.New("complete record without key or outcome")
		}
	case opJob:
		if r.Key == "" || r.Job == nil {
			return record{}, errors.New("job record without key or job")
		}
	case opReserve, opSettle, opSpent:
		if (r.Key == "") != (r.Op == opSpent) {
			return record{}, fmt.Errorf("%s record with a wrong key", r.Op)
		}
		if r.Credits < 0 {
			return record{}, fmt.Errorf("%s record with negative credits", r.Op)
		}
	default:
		return record{}, fmt.Errorf("unknown record op %q", r.Op)
	}
	return r, nil
}

// damage is one span of bytes the scanner could not read.
type damage struct {
	off, n int
	why    string
}

// scanned is one intact record and the size of its frame.
type scanned struct {
	rec  record
	size int
}

// scanResult is what scan found in a journal file.
type scanResult struct {
	records []scanned
	// end is the offset just past the last intact record.
	end int
	// middle lists the damaged spans followed by intact records; tail is
	// the damaged span after the last intact record, if any.
	middle []damage
	tail   *damage
}

// scan decodes every intact record of data. After a damaged span it resyncs
// on the next magic that starts an intact frame, so a bit flip costs only the
// record it hit. It never panics, and allocates only for decoded records.
func scan(data []byte) scanResult {
	var res scanResult
	pos := 0
	for pos < len(data) {
		payload, n, err := decodeFrame(data[pos:])
		if err == nil {
			r, derr := decodeRecord(payload)
			if derr != nil {
				// The frame is intact, so its length is trustworthy: skip
				// exactly this record.
				res.middle = append(res.middle, damage{pos, n, derr.Error()})
			} else {
				res.records = append(res.records, scanned{r, n})
			}
			pos += n
			res.end = pos
			continue
		}
		next := resync(data, pos+1)
		if next < 0 {
			res.tail = &damage{pos, len(data) - pos, err.Error()}
			break
		}
		res.middle = append(res.middle, damage{pos, next - pos, err.Error()})
		pos = next
	}
	return res
}

// resync returns the offset at or after from of the next intact frame, or -1.
func resync(data []byte, from int) int {
	for from < len(data) {
		i := bytes.Index(data[from:], magic[:])
		if i < 0 {
			return -1
		}
		from += i
		if _, _, err := decodeFrame(data[from:]); err == nil {
			return from
		}
		from++
	}
	return -1
}
