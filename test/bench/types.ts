/** One measured figure of a benchmark, as printed and compared by the bench runner. */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  ratio?: number;
}
