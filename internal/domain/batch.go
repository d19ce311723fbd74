package domain

import (
	"context"
	"database/sql"
	"strings"
)

// maxBatchParams bounds the placeholders of one multi-row INSERT (SQLite
// allows 32766, PostgreSQL 65535; smaller statements are as fast).
const maxBatchParams = 900

// batch accumulates rows for one table and writes them with multi-row
// INSERTs inside a transaction.
type batch struct {
	s     *Store
	tx    *sql.Tx
	table string
	cols  []string
	rows  int
	args  []any
	full  string // the statement for a full batch, built once
	// parent, if set, is the batch of the rows these rows reference: it
	// is written first, so that foreign keys hold.
	parent *batch
}

func (g *seeder) batch(tx *sql.Tx, table string, cols ...string) *batch {
	return &batch{s: g.s, tx: tx, table: table, cols: cols}
}

func (b *batch) perStatement() int { return maxBatchParams / len(b.cols) }

// add queues a row, writing the batch when it is full.
func (b *batch) add(ctx context.Context, values ...any) error {
	b.args = append(b.args, values...)
	b.rows++
	if b.rows < b.perStatement() {
		return nil
	}
	return b.flush(ctx)
}

// flush writes the queued rows (after its parent's).
func (b *batch) flush(ctx context.Context) error {
	if b.rows == 0 {
		return nil
	}
	if b.parent != nil {
		if err := b.parent.flush(ctx); err != nil {
			return err
		}
	}
	query := b.full
	if b.rows != b.perStatement() || query == "" {
		query = b.statement(b.rows)
		if b.rows == b.perStatement() {
			b.full = query
		}
	}
	_, err := b.tx.ExecContext(ctx, query, b.args...)
	b.rows, b.args = 0, b.args[:0]
	return err
}

func (b *batch) statement(rows int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(b.cols)), ", ") + ")"
	var sb strings.Builder
	sb.WriteString("INSERT INTO " + b.table + " (" + strings.Join(b.cols, ", ") + ") VALUES ")
	for i := 0; i < rows; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(row)
	}
	return b.s.q(sb.String())
}
