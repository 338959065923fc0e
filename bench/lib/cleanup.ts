/**
 * Things to undo (stop a server, drop a schema, remove a temp dir), run newest first either when the
 * code reaches them or all at once on failure or Ctrl-C, so nothing is left behind.
 */
export class Cleanup {
  private readonly tasks: Array<{ label: string; run: () => Promise<void> }> = [];

  /** Registers `fn`; the returned function runs it now (once) and unregisters it. */
  defer(label: string, fn: () => Promise<void>): () => Promise<void> {
    let done: Promise<void> | undefined;
    const task = {
      label,
      run: (): Promise<void> => {
        done ??= fn();
        return done;
      },
    };
    this.tasks.push(task);
    return async () => {
      const i = this.tasks.indexOf(task);
      if (i >= 0) this.tasks.splice(i, 1);
      await task.run();
    };
  }

  /** Runs every pending task, newest first; a failing task is reported and does not stop the rest. */
  async runAll(): Promise<void> {
    while (this.tasks.length > 0) {
      const task = this.tasks.pop();
      if (task === undefined) break;
      try {
        await task.run();
      } catch (err) {
        process.stderr.write(`bench: cleanup "${task.label}" failed: ${(err as Error).message}\n`);
      }
    }
  }
}
