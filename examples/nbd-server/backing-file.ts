/**
 * The export's backing file: positional reads and writes (pread/pwrite through a FileHandle, run on libuv's thread
 * pool) and fdatasync for FLUSH and FUA. One handle serves every connection.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const ZEROES = Buffer.alloc(1024 * 1024);

export class BackingFile {
  private constructor(
    readonly path: string,
    readonly size: number,
    private readonly handle: fs.promises.FileHandle,
    /** True when the file was created or grown by open(). */
    readonly resized: boolean,
  ) {}

  /**
   * Opens `file` read-write. With `size`: creates the file (sparse) when it does not exist and grows it when it is
   * smaller; a larger file is refused rather than truncated. Without `size`: the file must exist and its size is
   * the export's size. `readOnly` opens it O_RDONLY (and takes no `size`).
   */
  static async open(file: string, size?: number, readOnly = false): Promise<BackingFile> {
    if (readOnly && size !== undefined) throw new Error('a read-only backing file cannot be created or grown');
    let existing: fs.Stats | undefined;
    try {
      existing = await fs.promises.stat(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (existing && !existing.isFile()) throw new Error(`${file} is not a regular file`);
    if (!existing && size === undefined) throw new Error(`${file} does not exist: give --size to create it`);
    if (existing && size !== undefined && existing.size > size) {
      throw new Error(`${file} is ${existing.size} bytes, larger than --size ${size}: refusing to truncate it`);
    }
    const handle = await fs.promises.open(file, readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      const target = size ?? existing!.size;
      const resized = !existing || existing.size < target;
      if (resized) {
        await handle.truncate(target);
        await handle.datasync();
        if (!existing) await syncDirectory(path.dirname(path.resolve(file)));
      }
      return new BackingFile(file, target, handle, resized);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Fills `into` from `position`; past the end of the file (if it was shrunk behind our back) reads zeroes. */
  async read(into: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.handle.read(into, done, into.length - done, position + done);
      if (bytesRead === 0) {
        into.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async write(data: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, position + done);
      if (bytesWritten === 0) throw Object.assign(new Error('pwrite wrote nothing'), { code: 'EIO' });
      done += bytesWritten;
    }
  }

  async writeZeroes(position: number, length: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const step = Math.min(length - done, ZEROES.length);
      await this.write(ZEROES.subarray(0, step), position + done);
      done += step;
    }
  }

  /** fdatasync(2): every write that completed before the call is on stable storage when it resolves. */
  async sync(): Promise<void> {
    await this.handle.datasync();
  }

  /** A harmless operation on the thread pool (used to make libuv start its pool threads). */
  async touch(): Promise<void> {
    await this.handle.stat();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, fs.constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
