package gitfront

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// requestBody returns r's body decoded (Content-Encoding gzip or none),
// cut at limit decoded bytes (beyond which reads fail with ErrTooLarge),
// and checked as pkt-lines per mode. The returned pktReader is the body;
// its Err tells a framing error apart from other failures.
func requestBody(r *http.Request, limit int64, mode pktMode) (*pktReader, error) {
	var body io.Reader = cutBody{r.Body}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip body: %v", ErrMalformed, err)
		}
		body = &gzipBody{zr}
	default:
		return nil, newHTTPError(http.StatusUnsupportedMediaType, nil,
			fmt.Sprintf("unsupported Content-Encoding %q (use gzip or none)", enc))
	}
	return newPktReader(&limitedBody{r: body, left: limit, limit: limit}, mode), nil
}

// cutBody marks a body that ended before its declared length (or
// before its last chunk) as malformed.
type cutBody struct{ r io.Reader }

func (c cutBody) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if err == io.ErrUnexpectedEOF {
		err = fmt.Errorf("%w: request body cut off", ErrMalformed)
	}
	return n, err
}

// gzipBody marks gzip's errors as a malformed request.
type gzipBody struct{ zr *gzip.Reader }

func (g *gzipBody) Read(b []byte) (int, error) {
	n, err := g.zr.Read(b)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return n, fmt.Errorf("%w: gzip body: %v", ErrMalformed, err)
	}
	if err == io.ErrUnexpectedEOF {
		return n, fmt.Errorf("%w: gzip body cut off", ErrMalformed)
	}
	return n, err
}

// limitedBody fails with ErrTooLarge once more than left bytes were read.
type limitedBody struct {
	r           io.Reader
	left, limit int64
}

func (l *limitedBody) Read(b []byte) (int, error) {
	// Reading one byte more than left tells "exactly the limit" from
	// "over it".
	if int64(len(b)) > l.left+1 {
		b = b[:l.left+1]
	}
	n, err := l.r.Read(b)
	if int64(n) > l.left {
		return 0, fmt.Errorf("%w: request body over %d bytes", ErrTooLarge, l.limit)
	}
	l.left -= int64(n)
	return n, err
}
