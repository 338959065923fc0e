// Lint that protects the design (STYLE.md §8): no floating promises, `import type`, `node:` prefixes,
// and no reaching into another module's internals.
import js from '@eslint/js';
import { builtinModules } from 'node:module';
import tseslint from 'typescript-eslint';

const bareBuiltins = builtinModules.filter((m) => !m.startsWith('_') && !m.includes('/'));

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'data/**', 'coverage/**', 'web/vite.config.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['eslint.config.js'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      // Fastify handlers and plugins are async by contract even when they do not await.
      '@typescript-eslint/require-await': 'off',
      'no-restricted-imports': ['error', {
        paths: bareBuiltins.map((name) => ({ name, message: `Import "node:${name}" instead.` })),
      }],
    },
  },
  {
    // A module uses another module only through its exported service, never its routes or repository.
    files: ['server/src/modules/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: bareBuiltins.map((name) => ({ name, message: `Import "node:${name}" instead.` })),
        patterns: [{ regex: '^\\.\\./(?!\\.\\.)[^/]+/(?![^/]+\\.service\\.js$)', message: 'Import another module only through its *.service.js.' }],
      }],
    },
  },
  {
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
