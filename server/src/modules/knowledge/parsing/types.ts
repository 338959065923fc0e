/** The kinds of document the knowledge base can read. */
export type DocumentKind = 'markdown' | 'text' | 'json' | 'yaml' | 'openapi' | 'html' | 'pdf';

/**
 * A run of text under one heading. `heading` is a path such as "Guide > Install > Linux", or
 * "GET /pets · listPets" for an API operation; null when the text sits under no heading.
 */
export interface Section {
  heading: string | null;
  text: string;
}

/** Content that passed the type check but cannot be read (corrupt PDF, PDF without text, invalid UTF-8…). */
export class ParseError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ParseError';
  }
}
