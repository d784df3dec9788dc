/** A plain text table: the first `left` columns left-aligned, the rest right-aligned (numbers). */
export function formatTable(rows: string[][], left = 1): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r
      .map((c, i) => (i < left ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}
