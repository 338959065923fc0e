/**
 * The knowledge base's parsing and chunking layer: pure functions from an upload's name and bytes
 * to a checked kind, sections of text, and token-bounded chunks. No database, no HTTP.
 */
export { chunkSections, DEFAULT_CHUNKING, type Chunk, type ChunkingOptions } from './chunker.js';
export { extensionOf, sanitizeFilename } from './filename.js';
export { parseDocument } from './parse.js';
export { detectKind, KNOWN_EXTENSIONS } from './sniff.js';
export { ParseError, type DocumentKind, type Section } from './types.js';
