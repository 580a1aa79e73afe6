import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { getDMMF } from '@prisma/internals';
import { Client } from 'pg';
import { dropDatabase, listMigrations, migrate } from './migrate';

/**
 * The migrations are hand-written SQL (no schema engine here), so this proves they build exactly
 * what schema.prisma describes: every model's table, every field's column with its type and
 * nullability, every enum value, every unique and index.
 */
const url = `postgresql://postgres@127.0.0.1:5432/image_edits_schema_${process.pid}`;
const SCALAR_TO_PG: Record<string, string> = { String: 'text', Int: 'integer', DateTime: 'timestamp without time zone', Json: 'jsonb', Boolean: 'boolean', BigInt: 'bigint', Float: 'double precision', Decimal: 'numeric' };

const PG_UDT_TO_TYPE: Record<string, string> = { _text: 'text', _int4: 'integer' };

let pg: Client;
beforeAll(async () => {
  await dropDatabase(url);
  await migrate(url);
  pg = new Client({ connectionString: url });
  await pg.connect();
});
afterAll(async () => {
  await pg.end();
  await dropDatabase(url);
});

describe('migrations match schema.prisma', () => {
  it('creates every model and field with the right type and nullability', async () => {
    const dmmf = await getDMMF({ datamodel: readFileSync(path.resolve(__dirname, '../../../prisma/schema.prisma'), 'utf8') });
    const enums = new Set(dmmf.datamodel.enums.map((e) => e.name));
    for (const model of dmmf.datamodel.models) {
      const table = model.dbName ?? model.name;
      const cols = await pg.query<{ column_name: string; data_type: string; udt_name: string; is_nullable: string }>(
        'SELECT column_name, data_type, udt_name, is_nullable FROM information_schema.columns WHERE table_name = $1',
        [table],
      );
      expect(cols.rowCount).toBeGreaterThan(0);
      const byName = new Map(cols.rows.map((c) => [c.column_name, c]));
      const scalarFields = model.fields.filter((f) => f.kind === 'scalar' || f.kind === 'enum');
      expect(cols.rowCount).toBe(scalarFields.length);
      for (const field of scalarFields) {
        const col = byName.get(field.dbName ?? field.name);
        expect({ table, field: field.name, found: !!col }).toEqual({ table, field: field.name, found: true });
        const scalarType = enums.has(field.type) ? field.type : SCALAR_TO_PG[field.type];
        // lists are Postgres arrays (udt `_text`), which Prisma leaves nullable
        const expectedType = field.isList ? `${scalarType}[]` : scalarType;
        const actualType = col!.data_type === 'ARRAY' ? `${PG_UDT_TO_TYPE[col!.udt_name] ?? col!.udt_name}[]` : col!.data_type === 'USER-DEFINED' ? col!.udt_name : col!.data_type;
        expect({ table, field: field.name, type: actualType, nullable: col!.is_nullable === 'YES' }).toEqual({
          table,
          field: field.name,
          type: expectedType,
          nullable: field.isList ? true : !field.isRequired,
        });
      }
      for (const unique of [...model.uniqueFields, ...model.fields.filter((f) => f.isUnique).map((f) => [f.name])]) {
        const columns = unique.map((n) => model.fields.find((f) => f.name === n)!.dbName ?? n);
        const idx = await pg.query(
          `SELECT 1 FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE 'CREATE UNIQUE INDEX%' AND indexdef LIKE $2`,
          [table, `%(${columns.map((c) => `${c}`).join(', ')})%`],
        );
        expect({ table, unique: columns, exists: (idx.rowCount ?? 0) > 0 }).toEqual({ table, unique: columns, exists: true });
      }
    }
    for (const e of dmmf.datamodel.enums) {
      const values = await pg.query<{ enumlabel: string }>(
        'SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typname = $1 ORDER BY e.enumsortorder',
        [e.name],
      );
      expect(values.rows.map((r) => r.enumlabel)).toEqual(e.values.map((v) => v.name));
    }
    for (const model of dmmf.datamodel.models) {
      const table = model.dbName ?? model.name;
      const idx = await pg.query<{ indexname: string }>('SELECT indexname FROM pg_indexes WHERE tablename = $1', [table]);
      const names = idx.rows.map((r) => r.indexname);
      for (const index of dmmf.datamodel.indexes.filter((i) => i.model === model.name && i.type === 'normal')) {
        const cols = index.fields.map((f) => model.fields.find((mf) => mf.name === f.name)!.dbName ?? f.name);
        expect(names).toContain(index.dbName ?? `${table}_${cols.join('_')}_idx`);
      }
    }
  });

  it('records migrations as prisma migrate does and is idempotent', async () => {
    const rows = await pg.query<{ migration_name: string; checksum: string; finished_at: Date | null; applied_steps_count: number }>(
      'SELECT migration_name, checksum, finished_at, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
    );
    expect(rows.rows.map((r) => r.migration_name)).toEqual(listMigrations());
    for (const r of rows.rows) {
      expect(r.checksum).toMatch(/^[0-9a-f]{64}$/);
      expect(r.finished_at).not.toBeNull();
      expect(r.applied_steps_count).toBe(1);
    }
    const again = await migrate(url);
    expect(again.applied).toEqual([]);
  });
});
