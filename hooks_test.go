package mylib

// The template's machinery (newlib.manifest): a library made from the
// template keeps this file as it is, and newlib update merges the template's
// later changes into it.

// WithMigrationFiles makes New migrate with the files at the root of fsys
// instead of the embedded ones: the machinery's tests give it files of their
// own. Reuse the option: the files are parsed once per option.
var WithMigrationFiles = withFiles
